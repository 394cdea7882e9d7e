//! C += A B^T with A [m, len] and B [n, len] both row-major: every entry a dot product of two
//! contiguous rows. This is the shape of a convolution's weight gradient (dy rows against
//! im2col rows, both running over pixels), where the packed GEMM would first have to
//! transpose the large im2col operand. Register tiles of 3 A rows x 4 B rows (12 vector
//! accumulators); pixels in blocks that keep the 4 B rows in L1 while A rows stream past.
//!
//! Each entry is summed in a fixed order (8 lanes over a block of pixels, lanes added in a
//! fixed tree, blocks added in order), so the result depends only on the inputs.

use super::kernel::{self, Isa};

/// Pixels per block: 4 B rows of this many floats (16 KiB) stay in L1 while the A rows of
/// every tile stream past. A convolution's groups hold at most this many pixels (except
/// large images), so each entry is usually one block: one horizontal sum per entry.
const PB: usize = 1024;

/// c[i * ldc + j] += sum_p a[i * lda + p] * b[j * ldb + p], for i < m, j < n, p < len.
///
/// Panics only on a caller bug (a row that does not fit its slice).
#[allow(clippy::too_many_arguments)]
pub fn gemm_nt_acc(
    m: usize,
    n: usize,
    len: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 || len == 0 {
        return;
    }
    assert!(
        (m - 1) * lda + len <= a.len() && (n - 1) * ldb + len <= b.len(),
        "gemm_nt_acc operand spans"
    );
    assert!((m - 1) * ldc + n <= c.len(), "gemm_nt_acc C span");
    let isa = kernel::isa();
    for p0 in (0..len).step_by(PB) {
        let pl = PB.min(len - p0);
        for j0 in (0..n).step_by(4) {
            let nt = 4.min(n - j0);
            for i0 in (0..m).step_by(3) {
                let mt = 3.min(m - i0);
                let mut out = [[0.0f32; 4]; 3];
                let ar: [&[f32]; 3] =
                    std::array::from_fn(|i| row(a, (i0 + i.min(mt - 1)) * lda + p0, pl));
                let br: [&[f32]; 4] =
                    std::array::from_fn(|j| row(b, (j0 + j.min(nt - 1)) * ldb + p0, pl));
                tile(isa, &ar, &br, &mut out);
                for (i, o) in out.iter().take(mt).enumerate() {
                    let crow = &mut c[(i0 + i) * ldc + j0..(i0 + i) * ldc + j0 + nt];
                    for (cv, v) in crow.iter_mut().zip(o) {
                        *cv += *v;
                    }
                }
            }
        }
    }
}

fn row(s: &[f32], start: usize, len: usize) -> &[f32] {
    &s[start..start + len]
}

/// out[i][j] = dot(a[i], b[j]); rows of equal length. Edge tiles repeat the last row (the
/// caller drops the duplicates), so there is one kernel shape.
fn tile(isa: Isa, a: &[&[f32]; 3], b: &[&[f32]; 4], out: &mut [[f32; 4]; 3]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2Fma is chosen only on CPUs with AVX2 and FMA.
        Isa::Avx2Fma => unsafe { x86::tile(a, b, out) },
        Isa::Portable => portable(a, b, out),
    }
}

fn portable(a: &[&[f32]; 3], b: &[&[f32]; 4], out: &mut [[f32; 4]; 3]) {
    use wide::f32x8;
    let len = a[0].len();
    let l8 = len / 8 * 8;
    let ld =
        |s: &[f32], p: usize| f32x8::from(<[f32; 8]>::try_from(&s[p..p + 8]).unwrap_or_default());
    let mut acc = [[f32x8::ZERO; 4]; 3];
    for p in (0..l8).step_by(8) {
        let bv: [f32x8; 4] = std::array::from_fn(|j| ld(b[j], p));
        for (i, ai) in a.iter().enumerate() {
            let av = ld(ai, p);
            for (j, bj) in bv.iter().enumerate() {
                acc[i][j] = av.mul_add(*bj, acc[i][j]);
            }
        }
    }
    for i in 0..3 {
        for j in 0..4 {
            let l = acc[i][j].to_array();
            let mut s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
            for p in l8..len {
                s = a[i][p].mul_add(b[j][p], s);
            }
            out[i][j] = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(a: &[&[f32]; 3], b: &[&[f32]; 4], out: &mut [[f32; 4]; 3]) {
        let len = a[0].len();
        let l8 = len / 8 * 8;
        // SAFETY (whole body): every row has `len` floats (the caller cut them so), and p + 8
        // <= l8 <= len in the vector loop.
        unsafe {
            let (a0, a1, a2) = (a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr());
            let bp = [b[0].as_ptr(), b[1].as_ptr(), b[2].as_ptr(), b[3].as_ptr()];
            let mut acc = [[_mm256_setzero_ps(); 4]; 3];
            let mut p = 0;
            while p < l8 {
                let av = [
                    _mm256_loadu_ps(a0.add(p)),
                    _mm256_loadu_ps(a1.add(p)),
                    _mm256_loadu_ps(a2.add(p)),
                ];
                for (j, bj) in bp.iter().enumerate() {
                    let bv = _mm256_loadu_ps(bj.add(p));
                    for (i, ai) in av.iter().enumerate() {
                        acc[i][j] = _mm256_fmadd_ps(*ai, bv, acc[i][j]);
                    }
                }
                p += 8;
            }
            // 4 sums at once per row: hadd pairs, then fold the 128-bit halves; the lane
            // tree is ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)), as in the portable kernel
            for i in 0..3 {
                let h01 = _mm256_hadd_ps(acc[i][0], acc[i][1]);
                let h23 = _mm256_hadd_ps(acc[i][2], acc[i][3]);
                let h = _mm256_hadd_ps(h01, h23);
                let s4 = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
                let mut sums = [0.0f32; 4];
                _mm_storeu_ps(sums.as_mut_ptr(), s4);
                for j in 0..4 {
                    let mut s = sums[j];
                    for q in l8..len {
                        s = a[i][q].mul_add(b[j][q], s);
                    }
                    out[i][j] = s;
                }
            }
        }
    }
}
