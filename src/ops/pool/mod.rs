//! Pooling. Max-pool: window `kernel`, step `stride`, no padding, floor output size; the
//! backward routes each output's gradient to the FIRST maximum of its window in row-major
//! order, recomputed from the input (no index tensor to store). Global average pooling:
//! [N, C, H, W] -> [N, C, 1, 1].

pub mod cpu;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::tensor::Shape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    pub kernel: usize,
    pub stride: usize,
}

impl Pool2dParams {
    /// The 2x2 stride-2 pooling after each fractal block.
    pub const HALVE: Pool2dParams = Pool2dParams { kernel: 2, stride: 2 };

    pub fn out_shape(&self, x: &Shape) -> Result<Shape> {
        let [n, c, h, w] = x.nchw("maxpool2d")?;
        if self.kernel == 0 || self.stride == 0 {
            return Err(Error::shape("maxpool2d", format!("kernel {} stride {}", self.kernel, self.stride)));
        }
        if h < self.kernel || w < self.kernel {
            return Err(Error::shape(
                "maxpool2d",
                format!("input {x} is smaller than the {0}x{0} window", self.kernel),
            ));
        }
        Ok(Shape::new([n, c, (h - self.kernel) / self.stride + 1, (w - self.kernel) / self.stride + 1]))
    }
}
