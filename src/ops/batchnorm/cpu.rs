//! Per-channel reductions in f64 (the statistics feed every later layer; f32 sums over
//! 50k values lose digits), parallel over channels; the element-wise passes are parallel over
//! (image, channel) planes. Every reduction has a fixed order: results are thread-count free.

use rayon::prelude::*;

/// (mean, biased var) per channel of x [N, C, HW].
pub fn stats(x: &[f32], [n, c, hw]: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let per: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut s = 0.0f64;
            for i in 0..n {
                s += x[(i * c + ch) * hw..(i * c + ch + 1) * hw].iter().map(|&v| v as f64).sum::<f64>();
            }
            let m = s / (n * hw) as f64;
            let mut q = 0.0f64;
            for i in 0..n {
                q += x[(i * c + ch) * hw..(i * c + ch + 1) * hw]
                    .iter()
                    .map(|&v| {
                        let d = v as f64 - m;
                        d * d
                    })
                    .sum::<f64>();
            }
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
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(p, (yp, xp))| {
        let ch = p % c;
        let (s, t) = (wide::f32x8::splat(scale[ch]), wide::f32x8::splat(shift[ch]));
        let z = wide::f32x8::ZERO;
        let n8 = hw / 8 * 8;
        for (yc, xc) in yp[..n8].chunks_exact_mut(8).zip(xp[..n8].chunks_exact(8)) {
            let v = wide::f32x8::from(<[f32; 8]>::try_from(xc).unwrap_or([0.0; 8])).mul_add(s, t);
            yc.copy_from_slice(&(if relu { v.max(z) } else { v }).to_array());
        }
        for i in n8..hw {
            let v = xp[i].mul_add(scale[ch], shift[ch]);
            yp[i] = if relu { v.max(0.0) } else { v };
        }
    });
    y
}

/// Returns (dx, dgamma, dbeta) of the training-mode forward.
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
    let g = |i: usize| if relu && y[i] <= 0.0 { 0.0 } else { dy[i] };
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let inv = 1.0 / ((var[ch] + eps) as f64).sqrt();
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for i in 0..n {
                let base = (i * c + ch) * hw;
                for k in base..base + hw {
                    let gv = g(k) as f64;
                    sg += gv;
                    sgx += gv * (x[k] as f64 - mean[ch] as f64) * inv;
                }
            }
            (sg, sgx)
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(hw).enumerate().for_each(|(p, dxp)| {
        let ch = p % c;
        let inv = 1.0 / (var[ch] + eps).sqrt();
        let k = gamma[ch] * inv;
        let mb = (sums[ch].0 / m) as f32;
        let mgx = (sums[ch].1 / m) as f32;
        let base = p * hw;
        for (j, d) in dxp.iter_mut().enumerate() {
            let i = base + j;
            let xhat = (x[i] - mean[ch]) * inv;
            *d = k * (g(i) - mb - xhat * mgx);
        }
    });
    (dx, dgamma, dbeta)
}

pub fn update_running(rm: &mut [f32], rv: &mut [f32], mean: &[f32], var: &[f32], momentum: f32, n: usize) {
    let unbias = if n > 1 { n as f32 / (n - 1) as f32 } else { 1.0 };
    for ch in 0..rm.len() {
        rm[ch] = (1.0 - momentum) * rm[ch] + momentum * mean[ch];
        rv[ch] = (1.0 - momentum) * rv[ch] + momentum * var[ch] * unbias;
    }
}
