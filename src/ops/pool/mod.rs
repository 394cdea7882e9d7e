//! Pooling. Max-pool: window `kernel`, step `stride`, `pad` rows/columns of padding on each
//! side that never win (-inf, as PyTorch and ResNet's stem pooling), floor output size
//! Ho = (H + 2 pad - kernel) / stride + 1; `pad` is at most kernel / 2 (PyTorch's rule), so
//! every window holds at least one real pixel. The backward routes each output's gradient to
//! the FIRST maximum of its window's real pixels in row-major order, recomputed from the input
//! (no index tensor to store). Global average pooling: [N, C, H, W] -> [N, C, 1, 1].

pub mod cpu;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::tensor::Shape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Pool2dParams {
    /// The 2x2 stride-2 pooling after each fractal block.
    pub const HALVE: Pool2dParams = Pool2dParams {
        kernel: 2,
        stride: 2,
        pad: 0,
    };
    /// ResNet's stem pooling (3x3, stride 2, padding 1), used by FractalNet-34.
    pub const STEM: Pool2dParams = Pool2dParams {
        kernel: 3,
        stride: 2,
        pad: 1,
    };

    /// Output size along one axis of `n` input pixels, if the window fits.
    pub fn out_len(&self, n: usize) -> Option<usize> {
        (n + 2 * self.pad)
            .checked_sub(self.kernel)
            .map(|r| r / self.stride + 1)
    }

    pub fn out_shape(&self, x: &Shape) -> Result<Shape> {
        let [n, c, h, w] = x.nchw("maxpool2d")?;
        if self.kernel == 0 || self.stride == 0 {
            return Err(Error::shape(
                "maxpool2d",
                format!("kernel {} stride {}", self.kernel, self.stride),
            ));
        }
        if 2 * self.pad > self.kernel {
            return Err(Error::shape(
                "maxpool2d",
                format!(
                    "padding {} exceeds half the {}x{} window",
                    self.pad, self.kernel, self.kernel
                ),
            ));
        }
        match (self.out_len(h), self.out_len(w)) {
            (Some(ho), Some(wo)) => Ok(Shape::new([n, c, ho, wo])),
            _ => Err(Error::shape(
                "maxpool2d",
                format!(
                    "input {x} (pad {}) is smaller than the {1}x{1} window",
                    self.pad, self.kernel
                ),
            )),
        }
    }
}
