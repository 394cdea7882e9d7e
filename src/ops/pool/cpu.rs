use super::Pool2dParams;
use rayon::prelude::*;

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
            if plane[i] > bv || (bv.is_nan() && !plane[i].is_nan()) {
                bv = plane[i];
                best = i;
            }
        }
    }
    best
}

pub fn max_forward(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    [ho, wo]: [usize; 2],
    p: Pool2dParams,
) -> Vec<f32> {
    let mut y = vec![0.0f32; n * c * ho * wo];
    y.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each(|(yp, xp)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    yp[oy * wo + ox] = xp[argmax_window(xp, [h, w], p, oy, ox)];
                }
            }
        });
    y
}

pub fn max_backward(
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
