//! The op set, one folder per op: `mod.rs` holds the op's semantics and shape rules,
//! `cpu.rs` its CPU kernel, `tests.rs` hand-worked values and finite-difference checks.
//! The GLSL kernel of an op is `spirv/src/<op>*.comp`.

pub mod batchnorm;
pub mod conv2d;
pub mod dropout;
pub mod elementwise;
pub mod gemm;
pub mod join;
pub mod linear;
pub mod pool;
pub mod sgd;
pub mod softmax_xent;
