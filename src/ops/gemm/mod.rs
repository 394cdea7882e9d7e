//! Single-precision GEMM for the CPU kernels: C = alpha * op(A) op(B) + beta * C on strided,
//! row-major-or-not matrices. Backed by `matrixmultiply` (packed, register-blocked, runtime
//! AVX2/FMA detection). Callers parallelise over independent GEMMs (images, groups); a single
//! call runs on the calling thread so that results never depend on the thread count.

pub mod cpu;
#[cfg(test)]
mod tests;

pub use cpu::{MatRef, sgemm};
