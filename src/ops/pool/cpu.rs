use super::Pool2dParams;
use crate::ops::min_items;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use wide::f32x4;

/// Whether v replaces the current best bv: strictly greater, or bv is NaN and v is not. So
/// the first maximum wins ties, NaNs are skipped, and an all-NaN window yields its first NaN.
#[inline(always)]
fn beats(v: f32, bv: f32) -> bool {
    v > bv || (bv.is_nan() && !v.is_nan())
}

/// The real pixels [lo, hi) along one axis of window `o` (padding excluded).
#[inline]
fn window(o: usize, n: usize, p: Pool2dParams) -> (usize, usize) {
    let start = o * p.stride;
    (
        start.saturating_sub(p.pad),
        (start + p.kernel).saturating_sub(p.pad).min(n),
    )
}

/// Index (within the plane) of the first maximum of output (oy, ox)'s window.
#[inline]
fn argmax_window(
    plane: &[f32],
    [h, w]: [usize; 2],
    p: Pool2dParams,
    oy: usize,
    ox: usize,
) -> usize {
    let (y0, y1) = window(oy, h, p);
    let (x0, x1) = window(ox, w, p);
    let mut best = y0 * w + x0;
    let mut bv = plane[best];
    for iy in y0..y1 {
        for ix in x0..x1 {
            let i = iy * w + ix;
            if beats(plane[i], bv) {
                bv = plane[i];
                best = i;
            }
        }
    }
    best
}

pub fn max_forward(x: &[f32], d: [usize; 4], o: [usize; 2], p: Pool2dParams) -> Vec<f32> {
    if p == Pool2dParams::HALVE {
        max_forward_2x2(x, d, o)
    } else {
        max_forward_generic(x, d, o, p)
    }
}

pub fn max_backward(
    x: &[f32],
    dy: &[f32],
    d: [usize; 4],
    o: [usize; 2],
    p: Pool2dParams,
) -> Vec<f32> {
    if p == Pool2dParams::HALVE {
        max_backward_2x2(x, dy, d, o)
    } else {
        max_backward_generic(x, dy, d, o, p)
    }
}

/// Planes per rayon task: small planes (4x4, 2x2) are batched so a task is worth scheduling.
fn planes_per_task(hw: usize) -> usize {
    min_items(hw)
}

/// beats() on 4 lanes, as a mask.
#[inline(always)]
fn beats4(v: f32x4, m: f32x4) -> f32x4 {
    v.simd_gt(m) | (m.is_nan() & v.simd_eq(v))
}

/// Even and odd entries of 8 consecutive values: the left and right columns of 4 windows.
#[inline(always)]
fn deinterleave(r: &[f32; 8]) -> (f32x4, f32x4) {
    (
        f32x4::from([r[0], r[2], r[4], r[6]]),
        f32x4::from([r[1], r[3], r[5], r[7]]),
    )
}

/// One row of 2x2 windows: `y[ox]` = the window's first maximum. SIMD (4 windows a step,
/// selects, no branches: random data would mispredict every other window) + scalar tail.
fn max_row_2x2(r0: &[f32], r1: &[f32], y: &mut [MaybeUninit<f32>]) {
    let wo = y.len();
    let w4 = wo / 4 * 4;
    for ((yc, a), b) in y[..w4]
        .chunks_exact_mut(4)
        .zip(r0.chunks_exact(8))
        .zip(r1.chunks_exact(8))
    {
        let (a0, a1) = deinterleave(a.try_into().expect("8 values"));
        let (b0, b1) = deinterleave(b.try_into().expect("8 values"));
        let mut m = a0;
        m = beats4(a1, m).bitselect(a1, m);
        m = beats4(b0, m).bitselect(b0, m);
        m = beats4(b1, m).bitselect(b1, m);
        yc.write_copy_of_slice(&m.to_array());
    }
    for ox in w4..wo {
        let mut m = r0[2 * ox];
        for v in [r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]] {
            m = if beats(v, m) { v } else { m };
        }
        y[ox].write(m);
    }
}

/// One row of 2x2 windows backward: g[ox] goes to its window's first maximum, the other
/// three entries get 0. Windows do not overlap, so every element is written exactly once;
/// `0 + g` keeps the generic kernel's accumulate-into-zero bits (-0 becomes +0). The rows'
/// last entry, outside every window when the width is odd, gets 0 too.
fn max_row_2x2_backward(
    r0: &[f32],
    r1: &[f32],
    g: &[f32],
    top: &mut [MaybeUninit<f32>],
    bottom: &mut [MaybeUninit<f32>],
) {
    let wo = g.len();
    let w4 = wo / 4 * 4;
    let z = f32x4::ZERO;
    for ((((gc, a), b), t), u) in g[..w4]
        .chunks_exact(4)
        .zip(r0.chunks_exact(8))
        .zip(r1.chunks_exact(8))
        .zip(top.chunks_exact_mut(8))
        .zip(bottom.chunks_exact_mut(8))
    {
        let (a0, a1) = deinterleave(a.try_into().expect("8 values"));
        let (b0, b1) = deinterleave(b.try_into().expect("8 values"));
        let ta1 = beats4(a1, a0);
        let mut m = ta1.bitselect(a1, a0);
        let tb0 = beats4(b0, m);
        m = tb0.bitselect(b0, m);
        let tb1 = beats4(b1, m);
        // the last window entry that beat the running maximum is the first maximum
        let (sb1, sb0) = (tb1, tb0 & !tb1);
        let sa1 = ta1 & !tb0 & !tb1;
        let sa0 = !(ta1 | tb0 | tb1);
        let gv = z + f32x4::from(<[f32; 4]>::try_from(gc).expect("4 values"));
        let (ga0, ga1, gb0, gb1) = (
            sa0.bitselect(gv, z).to_array(),
            sa1.bitselect(gv, z).to_array(),
            sb0.bitselect(gv, z).to_array(),
            sb1.bitselect(gv, z).to_array(),
        );
        for j in 0..4 {
            t[2 * j].write(ga0[j]);
            t[2 * j + 1].write(ga1[j]);
            u[2 * j].write(gb0[j]);
            u[2 * j + 1].write(gb1[j]);
        }
    }
    for ox in w4..wo {
        let v = [r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]];
        let (mut bi, mut m) = (0, v[0]);
        for (i, &x) in v.iter().enumerate().skip(1) {
            if beats(x, m) {
                (bi, m) = (i, x);
            }
        }
        let gv = 0.0 + g[ox];
        top[2 * ox].write(if bi == 0 { gv } else { 0.0 });
        top[2 * ox + 1].write(if bi == 1 { gv } else { 0.0 });
        bottom[2 * ox].write(if bi == 2 { gv } else { 0.0 });
        bottom[2 * ox + 1].write(if bi == 3 { gv } else { 0.0 });
    }
    for v in top[2 * wo..].iter_mut().chain(&mut bottom[2 * wo..]) {
        v.write(0.0);
    }
}

fn max_forward_2x2(x: &[f32], [n, c, h, w]: [usize; 4], [ho, wo]: [usize; 2]) -> Vec<f32> {
    let per = planes_per_task(h * w);
    // SAFETY: the planes cover y, and `max_row_2x2` writes each of a plane's ho rows of wo.
    unsafe {
        crate::ops::written_by(n * c * ho * wo, |y| {
            y.par_chunks_mut(per * ho * wo)
                .zip(x.par_chunks(per * h * w))
                .for_each(|(yt, xt)| {
                    for (yp, xp) in yt.chunks_exact_mut(ho * wo).zip(xt.chunks_exact(h * w)) {
                        for (oy, yr) in yp.chunks_exact_mut(wo).enumerate() {
                            let r0 = &xp[2 * oy * w..2 * oy * w + 2 * wo];
                            let r1 = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * wo];
                            max_row_2x2(r0, r1, yr);
                        }
                    }
                })
        })
    }
}

fn max_backward_2x2(
    x: &[f32],
    dy: &[f32],
    [n, c, h, w]: [usize; 4],
    [ho, wo]: [usize; 2],
) -> Vec<f32> {
    let per = planes_per_task(h * w);
    // SAFETY: the planes cover dx; in each, `max_row_2x2_backward` writes the ho pairs of
    // whole rows, and an odd last row (h = 2 ho + 1) is zeroed here.
    unsafe {
        crate::ops::written_by(n * c * h * w, |dx| {
            dx.par_chunks_mut(per * h * w)
                .zip(x.par_chunks(per * h * w))
                .zip(dy.par_chunks(per * ho * wo))
                .for_each(|((dxt, xt), dyt)| {
                    for ((dxp, xp), dyp) in dxt
                        .chunks_exact_mut(h * w)
                        .zip(xt.chunks_exact(h * w))
                        .zip(dyt.chunks_exact(ho * wo))
                    {
                        for (oy, gr) in dyp.chunks_exact(wo).enumerate() {
                            let (top, bottom) = dxp[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
                            let r0 = &xp[2 * oy * w..2 * oy * w + 2 * wo];
                            let r1 = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * wo];
                            max_row_2x2_backward(r0, r1, gr, top, bottom);
                        }
                        for v in &mut dxp[2 * ho * w..] {
                            v.write(0.0);
                        }
                    }
                })
        })
    }
}

pub(crate) fn max_forward_generic(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    [ho, wo]: [usize; 2],
    p: Pool2dParams,
) -> Vec<f32> {
    let mut y = vec![0.0f32; n * c * ho * wo];
    y.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .with_min_len(min_items(h * w))
        .for_each(|(yp, xp)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    yp[oy * wo + ox] = xp[argmax_window(xp, [h, w], p, oy, ox)];
                }
            }
        });
    y
}

pub(crate) fn max_backward_generic(
    x: &[f32],
    dy: &[f32],
    [n, c, h, w]: [usize; 4],
    [ho, wo]: [usize; 2],
    p: Pool2dParams,
) -> Vec<f32> {
    let mut dx = vec![0.0f32; n * c * h * w];
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w))
        .zip(dy.par_chunks(ho * wo))
        .with_min_len(min_items(h * w))
        .for_each(|((dxp, xp), dyp)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    dxp[argmax_window(xp, [h, w], p, oy, ox)] += dyp[oy * wo + ox];
                }
            }
        });
    dx
}

pub fn avg_forward(x: &[f32], hw: usize) -> Vec<f32> {
    x.chunks(hw)
        .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32)
        .collect()
}

pub fn avg_backward(dy: &[f32], hw: usize) -> Vec<f32> {
    let inv = 1.0 / hw as f32;
    dy.iter()
        .flat_map(|&g| std::iter::repeat_n(g * inv, hw))
        .collect()
}
