//! SIMD (8-wide, `wide`) element-wise kernels; rayon splits long vectors into fixed chunks.

use rayon::prelude::*;
use std::mem::MaybeUninit;
use wide::f32x8;

/// Below this many elements the work stays on the calling thread.
const PAR_MIN: usize = 1 << 15;
const CHUNK: usize = 1 << 14;

#[inline]
fn load(s: &[f32]) -> f32x8 {
    f32x8::from(<[f32; 8]>::try_from(s).unwrap_or([0.0; 8]))
}

/// out[i] = f(a[i], b[i]) with a SIMD body and a scalar tail, into a new vector written once
/// (never zeroed first).
fn zip_map(
    a: &[f32],
    b: &[f32],
    fv: impl Fn(f32x8, f32x8) -> f32x8 + Sync,
    fs: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let body = |o: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32]| {
        let n8 = o.len() / 8 * 8;
        for ((oc, ac), bc) in o[..n8]
            .chunks_exact_mut(8)
            .zip(a[..n8].chunks_exact(8))
            .zip(b[..n8].chunks_exact(8))
        {
            oc.write_copy_of_slice(&fv(load(ac), load(bc)).to_array());
        }
        for i in n8..o.len() {
            o[i].write(fs(a[i], b[i]));
        }
    };
    // SAFETY: `body` writes every element of the slice it is given (n8 by the vector loop,
    // the rest by the tail), and the chunks cover the output.
    unsafe {
        crate::ops::written_by(a.len(), |out| {
            if out.len() < PAR_MIN {
                body(out, a, b);
            } else {
                out.par_chunks_mut(CHUNK)
                    .zip(a.par_chunks(CHUNK))
                    .zip(b.par_chunks(CHUNK))
                    .for_each(|((o, a), b)| body(o, a, b));
            }
        })
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
    zip_map(a, b, |a, b| a * b, |a, b| a * b)
}

pub fn scale(x: &[f32], s: f32) -> Vec<f32> {
    let sv = f32x8::splat(s);
    zip_map(x, x, |a, _| a * sv, |a, _| a * s)
}

pub fn relu(x: &[f32]) -> Vec<f32> {
    let z = f32x8::ZERO;
    zip_map(x, x, |a, _| a.max(z), |a, _| a.max(0.0))
}

/// dy where y > 0, else 0.
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    let z = f32x8::ZERO;
    zip_map(
        y,
        dy,
        |y, d| y.simd_gt(z).bitselect(d, z),
        |y, d| if y > 0.0 { d } else { 0.0 },
    )
}
