use rayon::prelude::*;

const CHUNK: usize = 8192;

/// Sum in the order given, then divide by the count (SPEC's join arithmetic).
pub fn mean(inputs: &[&[f32]]) -> Vec<f32> {
    let count = inputs.len() as f32;
    let mut y = inputs[0].to_vec();
    y.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, chunk)| {
        let base = ci * CHUNK;
        for inp in &inputs[1..] {
            for (j, v) in chunk.iter_mut().enumerate() {
                *v += inp[base + j];
            }
        }
        if inputs.len() > 1 {
            for v in chunk.iter_mut() {
                *v /= count;
            }
        }
    });
    y
}
