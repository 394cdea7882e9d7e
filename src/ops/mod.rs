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

/// Values below which a parallel loop is not worth splitting: handing work to another thread
/// costs a few microseconds, about what one core needs for this many element-wise operations.
/// At batch 1 most tensors are smaller, and per-op hand-offs would dominate.
pub const PAR_GRAIN: usize = 1 << 14;

/// The fewest items of `len` values each that one rayon task should take (`with_min_len`), so
/// that no task holds fewer than `PAR_GRAIN` values and a small tensor runs on the calling
/// thread. Splitting never changes the arithmetic of an item, so results do not depend on it.
pub fn min_items(len: usize) -> usize {
    PAR_GRAIN.div_ceil(len.max(1))
}
