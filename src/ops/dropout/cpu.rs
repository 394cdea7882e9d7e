use crate::rng::philox_uniform;
use rayon::prelude::*;

pub fn mask(n: usize, rate: f32, seed: u64) -> Vec<f32> {
    let keep = 1.0 / (1.0 - rate);
    let mut m = vec![0.0f32; n];
    m.par_chunks_mut(4096).enumerate().for_each(|(ci, chunk)| {
        for (j, v) in chunk.iter_mut().enumerate() {
            let i = (ci * 4096 + j) as u64;
            *v = if philox_uniform(seed, i) >= rate {
                keep
            } else {
                0.0
            };
        }
    });
    m
}
