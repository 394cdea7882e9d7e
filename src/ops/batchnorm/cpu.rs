//! Per-channel reductions, parallel over channels: each (image, channel) plane is summed in
//! 8 f32 lanes (`wide`) and the plane sums are added in f64, so the statistics keep their
//! digits over 50k values. The element-wise passes are parallel over planes. Every reduction
//! has a fixed order: results do not depend on the thread count.

use crate::ops::min_items;
use rayon::prelude::*;
use wide::f32x8;

#[inline]
fn ld(s: &[f32]) -> f32x8 {
    f32x8::from(<[f32; 8]>::try_from(s).unwrap_or([0.0; 8]))
}

/// Sum over a plane of f(x[i]) (8 lanes + scalar tail), returned in f64.
#[inline]
fn plane_sum(p: &[f32], fv: impl Fn(f32x8) -> f32x8, fs: impl Fn(f32) -> f32) -> f64 {
    let n8 = p.len() / 8 * 8;
    let mut acc = f32x8::ZERO;
    for c in p[..n8].chunks_exact(8) {
        acc += fv(ld(c));
    }
    let mut s: f64 = acc.to_array().iter().map(|&v| v as f64).sum();
    for &v in &p[n8..] {
        s += fs(v) as f64;
    }
    s
}

/// (mean, biased var) per channel of x [N, C, HW].
pub fn stats(x: &[f32], [n, c, hw]: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let per: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .with_min_len(min_items(n * hw))
        .map(|ch| {
            let plane = |i: usize| &x[(i * c + ch) * hw..(i * c + ch + 1) * hw];
            let s: f64 = (0..n).map(|i| plane_sum(plane(i), |v| v, |v| v)).sum();
            let m = s / (n * hw) as f64;
            let (mv, mf) = (f32x8::splat(m as f32), m as f32);
            let q: f64 = (0..n)
                .map(|i| {
                    plane_sum(
                        plane(i),
                        |v| {
                            let d = v - mv;
                            d * d
                        },
                        |v| (v - mf) * (v - mf),
                    )
                })
                .sum();
            (m as f32, (q / (n * hw) as f64) as f32)
        })
        .collect();
    per.into_iter().unzip()
}

/// y = gamma (x - mean) / sqrt(var + eps) + beta, then max(0, .) if relu.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    x: &[f32],
    dims: [usize; 3],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    relu: bool,
) -> Vec<f32> {
    let [_, c, hw] = dims;
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|ch| {
            let s = gamma[ch] / (var[ch] + eps).sqrt();
            (s, beta[ch] - mean[ch] * s)
        })
        .unzip();
    // written once, element by element, without zeroing first (a pass over memory that
    // cost as much as this one)
    let mut y: Vec<f32> = Vec::with_capacity(x.len());
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .with_min_len(min_items(hw))
        .for_each(|(p, (yp, xp))| {
            let ch = p % c;
            let (s, t) = (f32x8::splat(scale[ch]), f32x8::splat(shift[ch]));
            let z = f32x8::ZERO;
            let n8 = hw / 8 * 8;
            for (yc, xc) in yp[..n8].chunks_exact_mut(8).zip(xp[..n8].chunks_exact(8)) {
                let v = ld(xc).mul_add(s, t);
                yc.write_copy_of_slice(&(if relu { v.max(z) } else { v }).to_array());
            }
            for i in n8..hw {
                let v = xp[i].mul_add(scale[ch], shift[ch]);
                yp[i].write(if relu { v.max(0.0) } else { v });
            }
        });
    // SAFETY: the planes of hw values cover all x.len() values, and each plane's values were
    // written above (n8 by the vector loop, the rest by the tail).
    unsafe { y.set_len(x.len()) };
    y
}

/// Returns (dx, dgamma, dbeta) of the training-mode forward. With `relu`, the incoming
/// gradient is first masked by y > 0.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    dims: [usize; 3],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    y: &[f32],
    dy: &[f32],
    eps: f32,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [n, c, hw] = dims;
    let m = (n * hw) as f64;
    let z = f32x8::ZERO;
    let n8 = hw / 8 * 8;
    let masked = |yv: f32x8, dv: f32x8| {
        if relu {
            yv.simd_gt(z).bitselect(dv, z)
        } else {
            dv
        }
    };
    let masked_s = |yv: f32, dv: f32| if relu && yv <= 0.0 { 0.0 } else { dv };
    // per channel: sum g and sum g (x - mean); dgamma = inv * the latter
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .with_min_len(min_items(n * hw))
        .map(|ch| {
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            let mv = f32x8::splat(mean[ch]);
            for i in 0..n {
                let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                let (xp, yp, dp) = (&x[r.clone()], &y[r.clone()], &dy[r]);
                let (mut ag, mut agx) = (f32x8::ZERO, f32x8::ZERO);
                for k in (0..n8).step_by(8) {
                    let g = masked(ld(&yp[k..k + 8]), ld(&dp[k..k + 8]));
                    ag += g;
                    agx += g * (ld(&xp[k..k + 8]) - mv);
                }
                sg += ag.to_array().iter().map(|&v| v as f64).sum::<f64>();
                sgx += agx.to_array().iter().map(|&v| v as f64).sum::<f64>();
                for k in n8..hw {
                    let g = masked_s(yp[k], dp[k]);
                    sg += g as f64;
                    sgx += (g * (xp[k] - mean[ch])) as f64;
                }
            }
            let inv = 1.0 / ((var[ch] + eps) as f64).sqrt();
            (sg, sgx * inv)
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    // written once without zeroing first, as in `apply`
    let mut dx: Vec<f32> = Vec::with_capacity(x.len());
    dx.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(hw)
        .enumerate()
        .with_min_len(min_items(hw))
        .for_each(|(p, dxp)| {
            let ch = p % c;
            let inv = 1.0 / (var[ch] + eps).sqrt();
            let k = gamma[ch] * inv;
            let mb = (sums[ch].0 / m) as f32;
            let mgx = (sums[ch].1 / m) as f32;
            let r = p * hw..(p + 1) * hw;
            let (xp, yp, dp) = (&x[r.clone()], &y[r.clone()], &dy[r]);
            let (kv, mbv, mgv, mv, iv) = (
                f32x8::splat(k),
                f32x8::splat(mb),
                f32x8::splat(mgx),
                f32x8::splat(mean[ch]),
                f32x8::splat(inv),
            );
            for j in (0..n8).step_by(8) {
                let g = masked(ld(&yp[j..j + 8]), ld(&dp[j..j + 8]));
                let xhat = (ld(&xp[j..j + 8]) - mv) * iv;
                dxp[j..j + 8].write_copy_of_slice(&(kv * (g - mbv - xhat * mgv)).to_array());
            }
            for j in n8..hw {
                let xhat = (xp[j] - mean[ch]) * inv;
                dxp[j].write(k * (masked_s(yp[j], dp[j]) - mb - xhat * mgx));
            }
        });
    // SAFETY: the planes of hw values cover all x.len() values, each written above.
    unsafe { dx.set_len(x.len()) };
    (dx, dgamma, dbeta)
}

pub fn update_running(
    rm: &mut [f32],
    rv: &mut [f32],
    mean: &[f32],
    var: &[f32],
    momentum: f32,
    n: usize,
) {
    let unbias = if n > 1 {
        n as f32 / (n - 1) as f32
    } else {
        1.0
    };
    for ch in 0..rm.len() {
        rm[ch] = (1.0 - momentum) * rm[ch] + momentum * mean[ch];
        rv[ch] = (1.0 - momentum) * rv[ch] + momentum * var[ch] * unbias;
    }
}
