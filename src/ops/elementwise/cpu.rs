//! SIMD (8-wide, `wide`) element-wise kernels; rayon splits long vectors into fixed chunks.

use rayon::prelude::*;
use wide::f32x8;

/// Below this many elements the work stays on the calling thread.
const PAR_MIN: usize = 1 << 15;
const CHUNK: usize = 1 << 14;

#[inline]
fn load(s: &[f32]) -> f32x8 {
    f32x8::from(<[f32; 8]>::try_from(s).unwrap_or([0.0; 8]))
}

/// out[i] = f(a[i], b[i]) with a SIMD body and a scalar tail.
fn zip_map(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    fv: impl Fn(f32x8, f32x8) -> f32x8 + Sync,
    fs: impl Fn(f32, f32) -> f32 + Sync,
) {
    let body = |o: &mut [f32], a: &[f32], b: &[f32]| {
        let n8 = o.len() / 8 * 8;
        for ((oc, ac), bc) in o[..n8]
            .chunks_exact_mut(8)
            .zip(a[..n8].chunks_exact(8))
            .zip(b[..n8].chunks_exact(8))
        {
            oc.copy_from_slice(&fv(load(ac), load(bc)).to_array());
        }
        for i in n8..o.len() {
            o[i] = fs(a[i], b[i]);
        }
    };
    if out.len() < PAR_MIN {
        body(out, a, b);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((o, a), b)| body(o, a, b));
    }
}

pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    let body = |a: &mut [f32], x: &[f32]| {
        let n8 = a.len() / 8 * 8;
        for (ac, xc) in a[..n8].chunks_exact_mut(8).zip(x[..n8].chunks_exact(8)) {
            ac.copy_from_slice(&(load(ac) + load(xc)).to_array());
        }
        for i in n8..a.len() {
            a[i] += x[i];
        }
    };
    if acc.len() < PAR_MIN {
        body(acc, x);
    } else {
        acc.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(a, x)| body(a, x));
    }
}

pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; a.len()];
    zip_map(&mut out, a, b, |a, b| a * b, |a, b| a * b);
    out
}

pub fn scale(x: &[f32], s: f32) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let sv = f32x8::splat(s);
    zip_map(&mut out, x, x, |a, _| a * sv, |a, _| a * s);
    out
}

pub fn relu(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let z = f32x8::ZERO;
    zip_map(&mut out, x, x, |a, _| a.max(z), |a, _| a.max(0.0));
    out
}

/// dy where y > 0, else 0.
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; y.len()];
    let z = f32x8::ZERO;
    zip_map(
        &mut out,
        y,
        dy,
        |y, d| y.simd_gt(z).bitselect(d, z),
        |y, d| if y > 0.0 { d } else { 0.0 },
    );
    out
}
