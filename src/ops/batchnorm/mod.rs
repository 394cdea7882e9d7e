//! BatchNorm over (N, H, W) per channel (shared/SPEC.md): eps = 1e-5, momentum 0.1.
//! Training normalises with the batch mean and biased variance; the running variance is
//! updated with the unbiased one. ReLU can be fused into forward and backward: the layer is
//! conv -> dropout -> BN -> ReLU, and fusing saves one pass over the activation both ways.

pub mod cpu;
#[cfg(test)]
mod tests;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};

pub const EPS: f32 = 1e-5;
pub const MOMENTUM: f32 = 0.1;

/// The statistics of one training batch: per-channel mean and biased variance.
pub struct BatchStats<B: Backend> {
    pub mean: Tensor<B>,
    pub var: Tensor<B>,
}

impl<B: Backend> std::fmt::Debug for BatchStats<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchStats{}", self.mean.shape)
    }
}

impl<B: Backend> Clone for BatchStats<B> {
    fn clone(&self) -> Self {
        BatchStats {
            mean: self.mean.clone(),
            var: self.var.clone(),
        }
    }
}

/// Checks x is NCHW and every per-channel tensor has C entries; returns [N, C, H*W].
pub fn check(x: &Shape, per_channel: &[&Shape]) -> Result<[usize; 3]> {
    let [n, c, h, w] = x.nchw("batchnorm")?;
    for s in per_channel {
        if s.dims() != [c] {
            return Err(Error::shape(
                "batchnorm",
                format!("input {x} has {c} channels but a parameter has shape {s}"),
            ));
        }
    }
    if n * h * w == 0 {
        return Err(Error::shape("batchnorm", format!("empty input {x}")));
    }
    Ok([n, c, h * w])
}
