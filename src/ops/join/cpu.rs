use rayon::prelude::*;
use wide::f32x8;

const CHUNK: usize = 8192;

#[inline]
fn ld(s: &[f32]) -> f32x8 {
    f32x8::from(<[f32; 8]>::try_from(s).unwrap_or([0.0; 8]))
}

/// Sum in the order given, then divide by the count (SPEC's join arithmetic). One pass: every
/// output element is summed in registers (8 lanes) and divided once.
pub fn mean(inputs: &[&[f32]]) -> Vec<f32> {
    let count = inputs.len() as f32;
    if inputs.len() == 1 {
        return inputs[0].to_vec();
    }
    // SAFETY: the chunks cover y, and each chunk's elements are written below (n8 by the
    // vector loop, the rest by the tail).
    unsafe {
        crate::ops::written_by(inputs[0].len(), |y| {
            y.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, chunk)| {
                let base = ci * CHUNK;
                let ins: Vec<&[f32]> = inputs
                    .iter()
                    .map(|x| &x[base..base + chunk.len()])
                    .collect();
                let n8 = chunk.len() / 8 * 8;
                let cv = f32x8::splat(count);
                for (k, out) in chunk[..n8].chunks_exact_mut(8).enumerate() {
                    let r = k * 8..k * 8 + 8;
                    let mut acc = ld(&ins[0][r.clone()]);
                    for x in &ins[1..] {
                        acc += ld(&x[r.clone()]);
                    }
                    out.write_copy_of_slice(&(acc / cv).to_array());
                }
                for j in n8..chunk.len() {
                    let mut acc = ins[0][j];
                    for x in &ins[1..] {
                        acc += x[j];
                    }
                    chunk[j].write(acc / count);
                }
            })
        })
    }
}
