//! 2-D convolution (cross-correlation, no bias): x [N, Cin, H, W], w [Cout, Cin, kh, kw]
//! -> y [N, Cout, Ho, Wo], Ho = (H + 2 pad - kh) / stride + 1 (floor), zero padding.
//! Backward: dx by GEMM (w^T dy) + col2im, dw by GEMM (dy col^T) summed over the batch.

pub mod cpu;
#[cfg(test)]
mod tests;
pub mod winograd;

use crate::error::{Error, Result};
use crate::tensor::Shape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dParams {
    pub const SAME3X3: Conv2dParams = Conv2dParams { stride: 1, pad: 1 };
}

/// Geometry of one convolution, validated.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub ho: usize,
    pub wo: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeom {
    pub fn new(x: &Shape, w: &Shape, p: Conv2dParams) -> Result<Self> {
        let [n, cin, h, wd] = x.nchw("conv2d")?;
        let [cout, wcin, kh, kw] = w.nchw("conv2d")?;
        if wcin != cin {
            return Err(Error::shape(
                "conv2d",
                format!("input {x} has {cin} channels but weight {w} expects {wcin}"),
            ));
        }
        if p.stride == 0 || kh == 0 || kw == 0 {
            return Err(Error::shape(
                "conv2d",
                format!("kernel {w} with stride {}", p.stride),
            ));
        }
        if h + 2 * p.pad < kh || wd + 2 * p.pad < kw {
            return Err(Error::shape(
                "conv2d",
                format!("input {x} (pad {}) is smaller than kernel {kh}x{kw}", p.pad),
            ));
        }
        Ok(ConvGeom {
            n,
            cin,
            h,
            w: wd,
            cout,
            kh,
            kw,
            ho: (h + 2 * p.pad - kh) / p.stride + 1,
            wo: (wd + 2 * p.pad - kw) / p.stride + 1,
            stride: p.stride,
            pad: p.pad,
        })
    }
    pub fn out_shape(&self) -> Shape {
        Shape::new([self.n, self.cout, self.ho, self.wo])
    }
    /// Rows of the im2col matrix: Cin * kh * kw.
    pub fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    /// Multiply-adds of the forward pass for the whole batch.
    pub fn macs(&self) -> usize {
        self.n * self.cout * self.ho * self.wo * self.k()
    }
    /// A 1x1 stride-1 unpadded convolution needs no im2col: the input is the column matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
}
