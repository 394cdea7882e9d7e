//! Single-precision GEMM for the CPU kernels: C = alpha * A B + beta * C.
//!
//! A packed, register-blocked SGEMM of our own (`cpu`: the blocked driver, `pack`: packing,
//! `kernel`: the 6x16 microkernels, AVX2 + FMA chosen at run time). Operands are anything
//! that can pack itself into micro-panels (`PackA`, `PackB`): strided matrices, or a
//! convolution's implicit im2col. C can be laid out as several NCHW images side by side
//! (`CLayout::images`), so a convolution's product lands in its output without a copy.
//! `matrixmultiply` is the reference the tests and benches hold it against.

pub mod cpu;
pub mod dot;
pub mod kernel;
pub mod pack;
#[cfg(test)]
mod tests;

pub use cpu::{CLayout, MatRef, gemm, gemm_bias_relu, sgemm, sgemm_par};
pub use dot::gemm_nt_acc;
pub use pack::{InPlaceB, PackA, PackB};
