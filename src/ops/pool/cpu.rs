use super::Pool2dParams;
use rayon::prelude::*;

/// Whether v replaces the current best bv: strictly greater, or bv is NaN and v is not. So
/// the first maximum wins ties, NaNs are skipped, and an all-NaN window yields its first NaN.
#[inline(always)]
fn beats(v: f32, bv: f32) -> bool {
    v > bv || (bv.is_nan() && !v.is_nan())
}

/// Index (within the plane) of the first maximum of output (oy, ox)'s window.
#[inline]
fn argmax_window(plane: &[f32], w: usize, p: Pool2dParams, oy: usize, ox: usize) -> usize {
    let mut best = (oy * p.stride) * w + ox * p.stride;
    let mut bv = plane[best];
    for ky in 0..p.kernel {
        for kx in 0..p.kernel {
            let i = (oy * p.stride + ky) * w + ox * p.stride + kx;
            if beats(plane[i], bv) {
                bv = plane[i];
                best = i;
            }
        }
    }
    best
}

/// The 2x2 stride-2 window [a, b; c, d]: (row-major position 0..4 of its first maximum, value),
/// by the same rule as `argmax_window`, without branches.
#[inline(always)]
fn first_max_2x2(a: f32, b: f32, c: f32, d: f32) -> (u8, f32) {
    let (mut bi, mut bv) = (0u8, a);
    for (i, v) in [(1u8, b), (2, c), (3, d)] {
        let t = beats(v, bv);
        bi = if t { i } else { bi };
        bv = if t { v } else { bv };
    }
    (bi, bv)
}

pub fn max_forward(x: &[f32], d: [usize; 4], o: [usize; 2], p: Pool2dParams) -> Vec<f32> {
    if p == Pool2dParams::HALVE {
        max_forward_2x2(x, d, o)
    } else {
        max_forward_generic(x, d, o, p)
    }
}

pub fn max_backward(x: &[f32], dy: &[f32], d: [usize; 4], o: [usize; 2], p: Pool2dParams) -> Vec<f32> {
    if p == Pool2dParams::HALVE {
        max_backward_2x2(x, dy, d, o)
    } else {
        max_backward_generic(x, dy, d, o, p)
    }
}

/// Planes per rayon task: small planes (4x4, 2x2) are batched so a task is worth scheduling.
fn planes_per_task(hw: usize) -> usize {
    (4096 / hw.max(1)).max(1)
}

fn max_forward_2x2(x: &[f32], [n, c, h, w]: [usize; 4], [ho, wo]: [usize; 2]) -> Vec<f32> {
    let mut y = vec![0.0f32; n * c * ho * wo];
    let per = planes_per_task(h * w);
    y.par_chunks_mut(per * ho * wo).zip(x.par_chunks(per * h * w)).for_each(|(yt, xt)| {
        for (yp, xp) in yt.chunks_exact_mut(ho * wo).zip(xt.chunks_exact(h * w)) {
            for (oy, yr) in yp.chunks_exact_mut(wo).enumerate() {
                let r0 = &xp[2 * oy * w..2 * oy * w + 2 * wo];
                let r1 = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * wo];
                for ((yv, a), b) in yr.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
                    *yv = first_max_2x2(a[0], a[1], b[0], b[1]).1;
                }
            }
        }
    });
    y
}

fn max_backward_2x2(x: &[f32], dy: &[f32], [n, c, h, w]: [usize; 4], [ho, wo]: [usize; 2]) -> Vec<f32> {
    let mut dx = vec![0.0f32; n * c * h * w];
    let per = planes_per_task(h * w);
    dx.par_chunks_mut(per * h * w)
        .zip(x.par_chunks(per * h * w))
        .zip(dy.par_chunks(per * ho * wo))
        .for_each(|((dxt, xt), dyt)| {
            for ((dxp, xp), dyp) in dxt.chunks_exact_mut(h * w).zip(xt.chunks_exact(h * w)).zip(dyt.chunks_exact(ho * wo)) {
                for (oy, gr) in dyp.chunks_exact(wo).enumerate() {
                    let (top, bottom) = dxp[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
                    let r0 = &xp[2 * oy * w..2 * oy * w + 2 * wo];
                    let r1 = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * wo];
                    for ((((&g, a), b), t), u) in gr
                        .iter()
                        .zip(r0.chunks_exact(2))
                        .zip(r1.chunks_exact(2))
                        .zip(top.chunks_exact_mut(2))
                        .zip(bottom.chunks_exact_mut(2))
                    {
                        let (i, _) = first_max_2x2(a[0], a[1], b[0], b[1]);
                        // windows do not overlap: each element is written once; `0 + g`
                        // keeps the generic kernel's accumulate-into-zero bits (-0 -> +0)
                        let g = 0.0 + g;
                        t[0] = if i == 0 { g } else { 0.0 };
                        t[1] = if i == 1 { g } else { 0.0 };
                        u[0] = if i == 2 { g } else { 0.0 };
                        u[1] = if i == 3 { g } else { 0.0 };
                    }
                }
            }
        });
    dx
}

pub(crate) fn max_forward_generic(x: &[f32], [n, c, h, w]: [usize; 4], [ho, wo]: [usize; 2], p: Pool2dParams) -> Vec<f32> {
    let mut y = vec![0.0f32; n * c * ho * wo];
    y.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).for_each(|(yp, xp)| {
        for oy in 0..ho {
            for ox in 0..wo {
                yp[oy * wo + ox] = xp[argmax_window(xp, w, p, oy, ox)];
            }
        }
    });
    y
}

pub(crate) fn max_backward_generic(x: &[f32], dy: &[f32], [n, c, h, w]: [usize; 4], [ho, wo]: [usize; 2], p: Pool2dParams) -> Vec<f32> {
    let mut dx = vec![0.0f32; n * c * h * w];
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w))
        .zip(dy.par_chunks(ho * wo))
        .for_each(|((dxp, xp), dyp)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    dxp[argmax_window(xp, w, p, oy, ox)] += dyp[oy * wo + ox];
                }
            }
        });
    dx
}

pub fn avg_forward(x: &[f32], hw: usize) -> Vec<f32> {
    x.chunks(hw).map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32).collect()
}

pub fn avg_backward(dy: &[f32], hw: usize) -> Vec<f32> {
    let inv = 1.0 / hw as f32;
    dy.iter().flat_map(|&g| std::iter::repeat_n(g * inv, hw)).collect()
}
