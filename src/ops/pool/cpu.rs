use super::Pool2dParams;
use rayon::prelude::*;

/// Index (within the plane) of the first maximum of output (oy, ox)'s window.
#[inline]
fn argmax_window(plane: &[f32], w: usize, p: Pool2dParams, oy: usize, ox: usize) -> usize {
    let mut best = (oy * p.stride) * w + ox * p.stride;
    let mut bv = plane[best];
    for ky in 0..p.kernel {
        for kx in 0..p.kernel {
            let i = (oy * p.stride + ky) * w + ox * p.stride + kx;
            if plane[i] > bv || (bv.is_nan() && !plane[i].is_nan()) {
                bv = plane[i];
                best = i;
            }
        }
    }
    best
}

pub fn max_forward(x: &[f32], [n, c, h, w]: [usize; 4], [ho, wo]: [usize; 2], p: Pool2dParams) -> Vec<f32> {
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

pub fn max_backward(x: &[f32], dy: &[f32], [n, c, h, w]: [usize; 4], [ho, wo]: [usize; 2], p: Pool2dParams) -> Vec<f32> {
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
