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
pub mod team;

/// A vector of `n` floats that `fill` writes, without the zeroing pass of `vec![0.0; n]`
/// first: on a 2-core machine that pass over every output cost as much as many ops' own
/// work (memset was 8-11% of a training step).
///
/// # Safety
/// `fill` must write every one of the `n` elements (with `MaybeUninit::write` or through
/// pointers) before it returns.
pub(crate) unsafe fn written_by(
    n: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller's contract: all n elements are initialised now.
    unsafe { v.set_len(n) };
    v
}

/// Values below which a parallel loop is not worth splitting: waking a sleeping rayon worker
/// costs 10-50 microseconds on a shared 2-core VM, about what one core needs for this many
/// element-wise operations. At batch 1 every tensor is smaller (the largest, 16 x 34 x 34
/// padded values, took a rayon hand-off per convolution at 1 << 14).
pub const PAR_GRAIN: usize = 1 << 16;

/// The fewest items of `len` values each that one rayon task should take (`with_min_len`), so
/// that no task holds fewer than `PAR_GRAIN` values and a small tensor runs on the calling
/// thread. Splitting never changes the arithmetic of an item, so results do not depend on it.
pub fn min_items(len: usize) -> usize {
    PAR_GRAIN.div_ceil(len.max(1))
}
