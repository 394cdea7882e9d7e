//! C += A B^T with A [m, len] and B [n, len] both row-major: every entry a dot product of two
//! contiguous rows. This is the shape of a convolution's weight gradient (dy rows against
//! im2col rows, both running over pixels), where the packed GEMM would first have to
//! transpose the large im2col operand. Register tiles of 4 x 3 rows on AVX2 (12 vector
//! accumulators; which operand gives the 4 is chosen per call), 4 x 12 on AVX-512 (pairs of
//! rows in one register; not on AMD Zen 4, whose 512-bit operations are two 256-bit halves:
//! `kernel::nt_isa`), 3 x 4 in the portable kernel; pixels in blocks of `PB`.
//!
//! Each entry is summed in a fixed order (8 lanes over a block of pixels, lanes added in a
//! fixed tree, blocks added in order), so the result depends only on the inputs.

use super::kernel::{self, Isa};

/// Pixels per block: 4 rows of this many floats (16 KiB) stay in L1 while the rows of the
/// other operand stream past. A convolution's groups hold at most this many pixels (except
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
    nt_acc_with(kernel::nt_isa(), m, n, len, a, lda, b, ldb, c, ldc)
}

/// `gemm_nt_acc` on a given kernel ISA (one this CPU has; `kernel::supported`), spans
/// already checked.
#[allow(clippy::too_many_arguments)]
pub(crate) fn nt_acc_with(
    isa: Isa,
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
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: Avx512 is chosen only on CPUs with AVX-512F; the spans were checked above.
        return unsafe { x86::gemm_nt_acc_512(m, n, len, a, lda, b, ldb, c, ldc) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma {
        // SAFETY: Avx2Fma is chosen only on CPUs with AVX2 and FMA; the spans were checked.
        return unsafe { x86::gemm_nt_acc_avx2(m, n, len, a, lda, b, ldb, c, ldc) };
    }
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
                tile(&ar, &br, &mut out);
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
/// caller drops the duplicates), so there is one kernel shape. The portable kernel: the x86
/// ones have their own loops (`x86::gemm_nt_acc_avx2`, `x86::gemm_nt_acc_512`).
fn tile(a: &[&[f32]; 3], b: &[&[f32]; 4], out: &mut [[f32; 4]; 3]) {
    portable(a, b, out)
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

    /// `gemm_nt_acc` on AVX2: tiles of 4 rows of one operand (X, kept in L1) against 3 rows
    /// of the other (Y, streaming past), 12 accumulators, with the loops, the lane trees and
    /// the < 8-pixel tails in one function. X is A and Y is B, or the other way round,
    /// whichever computes fewer duplicated edge rows: a convolution's dW is [Cout, 9 Cin], so
    /// Cout (a multiple of 4) meets 9 Cin (of 3) with no waste. Each entry is the same sum in
    /// the same order as the 3 x 4 tiles compute it (`tile`): 8 lanes of FMA chains, the tree
    /// ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), the tail pixels fused in one by one, blocks of
    /// `PB` pixels added to C in order. Only the grouping into registers differs (and the
    /// tail, done 4 entries per instruction), so the bits are the same.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_nt_acc_avx2(
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
        const TX: usize = 4;
        const TY: usize = 3;
        /// 192 KiB of Y rows: within L2 (512 KiB on Zen 3, 1-2 MiB on Intel) beside X.
        const Y_BLOCK_FLOATS: usize = 48 * 1024;
        let rows = |k: usize, t: usize| k.div_ceil(t) * t;
        // (X, its row stride, its rows, C's stride along X), the same for Y
        let (x, ldx, nx, csx, y, ldy, ny, csy) =
            if rows(m, TX) * rows(n, TY) <= rows(n, TX) * rows(m, TY) {
                (a, lda, m, ldc, b, ldb, n, 1)
            } else {
                (b, ldb, n, 1, a, lda, m, ldc)
            };
        if m == 0 || n == 0 || len == 0 {
            return;
        }
        assert!(
            (m - 1) * lda + len <= a.len()
                && (n - 1) * ldb + len <= b.len()
                && (m - 1) * ldc + n <= c.len(),
            "gemm_nt_acc spans"
        );
        let (xp, yp, cp) = (x.as_ptr(), y.as_ptr(), c.as_mut_ptr());
        // SAFETY (loops): rows x0 + i < nx and y0 + j < ny from pixel p0 hold pl floats
        // (p0 + pl <= len, checked above against the slices), and C's entry (x0 + i, y0 + j)
        // is (row, column) (i, j) or (j, i) of the checked m x n block with stride ldc.
        for p0 in (0..len).step_by(super::PB) {
            let pl = super::PB.min(len - p0);
            let l8 = pl / 8 * 8;
            // Y in blocks of rows that stay in L2 while every X tile streams them past
            let yb = (Y_BLOCK_FLOATS / pl / TY * TY).max(TY);
            for yb0 in (0..ny).step_by(yb) {
                let yb1 = (yb0 + yb).min(ny);
                for x0 in (0..nx).step_by(TX) {
                    let xt = TX.min(nx - x0);
                    // a short last tile repeats its last row (its sums are not stored)
                    let xo = |i: usize| (x0 + i.min(xt - 1)) * ldx + p0;
                    let xr =
                        unsafe { [xp.add(xo(0)), xp.add(xo(1)), xp.add(xo(2)), xp.add(xo(3))] };
                    // the tail pixels of the 4 X rows, one vector per pixel: [x0, x1, x2, x3][q]
                    let mut tail = [_mm_setzero_ps(); 7];
                    for (q, t) in tail.iter_mut().enumerate().take(pl - l8) {
                        let o = l8 + q;
                        *t = unsafe {
                            _mm_setr_ps(*xr[0].add(o), *xr[1].add(o), *xr[2].add(o), *xr[3].add(o))
                        };
                    }
                    for y0 in (yb0..yb1).step_by(TY) {
                        let yt = TY.min(ny - y0);
                        let yo = |j: usize| (y0 + j.min(yt - 1)) * ldy + p0;
                        let yr = unsafe { [yp.add(yo(0)), yp.add(yo(1)), yp.add(yo(2))] };
                        let mut sums = unsafe { tile_4x3(xr, yr, l8) };
                        for (s, yj) in sums.iter_mut().zip(yr) {
                            for (q, xq) in tail.iter().enumerate().take(pl - l8) {
                                // lane i: fma(x_i[q], y_j[q], s), the scalar tail's fused step
                                *s = _mm_fmadd_ps(*xq, unsafe { _mm_set1_ps(*yj.add(l8 + q)) }, *s);
                            }
                        }
                        for (j, s) in sums.iter().enumerate().take(yt) {
                            let mut v = [0.0f32; 4];
                            // SAFETY: v holds 4 floats.
                            unsafe { _mm_storeu_ps(v.as_mut_ptr(), *s) };
                            for (i, v) in v.iter().enumerate().take(xt) {
                                unsafe { *cp.add((x0 + i) * csx + (y0 + j) * csy) += v };
                            }
                        }
                    }
                }
            }
        }
    }

    /// The lane-tree sums of 4 X rows against 3 Y rows over `l8` pixels (a multiple of 8):
    /// for each Y row j, [sum over row X_0, .., X_3].
    ///
    /// # Safety
    /// Every row holds at least `l8` floats.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile_4x3(xp: [*const f32; 4], yp: [*const f32; 3], l8: usize) -> [__m128; 3] {
        // SAFETY (whole body): p + 8 <= l8, inside every row (contract).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 3]; 4];
            let mut p = 0;
            while p < l8 {
                let yv = [
                    _mm256_loadu_ps(yp[0].add(p)),
                    _mm256_loadu_ps(yp[1].add(p)),
                    _mm256_loadu_ps(yp[2].add(p)),
                ];
                for (i, row) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(xp[i].add(p));
                    for (a, yv) in row.iter_mut().zip(&yv) {
                        *a = _mm256_fmadd_ps(xv, *yv, *a);
                    }
                }
                p += 8;
            }
            // per Y row: hadd pairs of X rows, then fold the 128-bit halves; each lane's tree
            // is ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)), as in `tile`
            let mut out = [_mm_setzero_ps(); 3];
            for (j, o) in out.iter_mut().enumerate() {
                let h01 = _mm256_hadd_ps(acc[0][j], acc[1][j]);
                let h23 = _mm256_hadd_ps(acc[2][j], acc[3][j]);
                let h = _mm256_hadd_ps(h01, h23);
                *o = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
            }
            out
        }
    }

    /// `gemm_nt_acc` with 512-bit registers and the same bits. A register holds two entries'
    /// 8 lanes side by side: rows i and i + 1 of A (interleaved by 8 pixels into `pairs`, so
    /// one load fetches both) against one row of B broadcast to both halves. Tiles of 4 A
    /// rows x 12 B rows are 24 such registers: 24 FMAs per 8 pixels for 48 entries, where the
    /// AVX2 tile does 12 for 12. Each lane sums the same pixels in the same order, and the
    /// lanes are added in the same tree, so every entry is the AVX2 kernel's value.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_nt_acc_512(
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
        const TI: usize = 4;
        const TJ: usize = 12;
        let mut pairs: Vec<f32> = Vec::new();
        for p0 in (0..len).step_by(super::PB) {
            let pl = super::PB.min(len - p0);
            let l8 = pl / 8 * 8;
            let steps = l8 / 8;
            // A's rows of this block, 4 per tile as 2 pairs, each pair [steps][16]: lanes
            // 0..8 row i, 8..16 row i + 1 (a short last tile repeats its last row)
            let tiles_i = m.div_ceil(TI);
            // from a 64-byte boundary: each pair load is then one cache line, not two
            pairs.clear();
            pairs.resize(tiles_i * 2 * steps * 16 + 16, 0.0);
            let off = pairs.as_ptr().align_offset(64).min(16);
            let pairs = &mut pairs[off..off + tiles_i * 2 * steps * 16];
            for t in 0..tiles_i {
                let i0 = t * TI;
                let mt = TI.min(m - i0);
                for h in 0..2 {
                    let r0 = &a[(i0 + (2 * h).min(mt - 1)) * lda + p0..][..l8];
                    let r1 = &a[(i0 + (2 * h + 1).min(mt - 1)) * lda + p0..][..l8];
                    let dst = &mut pairs[(t * 2 + h) * steps * 16..][..steps * 16];
                    for (s, d) in dst.chunks_exact_mut(16).enumerate() {
                        d[..8].copy_from_slice(&r0[s * 8..s * 8 + 8]);
                        d[8..].copy_from_slice(&r1[s * 8..s * 8 + 8]);
                    }
                }
            }
            for j0 in (0..n).step_by(TJ) {
                let nt = TJ.min(n - j0);
                let br: [&[f32]; TJ] =
                    std::array::from_fn(|j| &b[(j0 + j.min(nt - 1)) * ldb + p0..][..pl]);
                for t in 0..tiles_i {
                    let i0 = t * TI;
                    let mt = TI.min(m - i0);
                    let pa = [
                        &pairs[t * 2 * steps * 16..][..steps * 16],
                        &pairs[(t * 2 + 1) * steps * 16..][..steps * 16],
                    ];
                    // SAFETY: each pair slice holds steps x 16 floats and each B row pl >= l8.
                    let sums = unsafe { tile_4x12(pa, &br, steps) };
                    let ar: [&[f32]; TI] =
                        std::array::from_fn(|i| &a[(i0 + i.min(mt - 1)) * lda + p0..][..pl]);
                    for i in 0..mt {
                        let crow = &mut c[(i0 + i) * ldc + j0..][..nt];
                        for (j, cv) in crow.iter_mut().enumerate() {
                            let mut s = sums[i][j];
                            for q in l8..pl {
                                s = ar[i][q].mul_add(br[j][q], s);
                            }
                            *cv += s;
                        }
                    }
                }
            }
        }
    }

    /// The 8-lane sums of 4 A rows (two interleaved pairs) against 12 B rows over `steps`
    /// blocks of 8 pixels, each reduced by the tree ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)).
    /// 24 accumulators: each A load (from L2, where A's rows stream past) feeds 12 FMAs.
    ///
    /// # Safety
    /// Both pair slices hold `steps * 16` floats, every B row at least `steps * 8`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn tile_4x12(pa: [&[f32]; 2], br: &[&[f32]; 12], steps: usize) -> [[f32; 12]; 4] {
        // SAFETY (whole body): s < steps, so every load is inside the slices (contract).
        unsafe {
            let (a0, a1) = (pa[0].as_ptr(), pa[1].as_ptr());
            let bp: [*const f32; 12] = std::array::from_fn(|j| br[j].as_ptr());
            let mut acc = [[_mm512_setzero_ps(); 12]; 2];
            for s in 0..steps {
                let av = [
                    _mm512_loadu_ps(a0.add(s * 16)),
                    _mm512_loadu_ps(a1.add(s * 16)),
                ];
                for (j, bj) in bp.iter().enumerate() {
                    // 8 floats of row j in both halves (a 256-bit broadcast load)
                    let bv = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(
                        bj.add(s * 8).cast::<f64>(),
                    )));
                    for (h, ah) in av.iter().enumerate() {
                        acc[h][j] = _mm512_fmadd_ps(*ah, bv, acc[h][j]);
                    }
                }
            }
            // hadd per 128-bit lane, as _mm256_hadd_ps: [x0+x1, x2+x3, y0+y1, y2+y3]
            let hadd = |x: __m512, y: __m512| {
                let even = _mm512_shuffle_ps::<0b10_00_10_00>(x, y);
                let odd = _mm512_shuffle_ps::<0b11_01_11_01>(x, y);
                _mm512_add_ps(even, odd)
            };
            let mut out = [[0.0f32; 12]; 4];
            for (h, acc) in acc.iter().enumerate() {
                for g in 0..3 {
                    // 128-bit lanes of hadd(hadd(j, j+1), hadd(j+2, j+3)): [entries j..j+4,
                    // lanes 0-3 | lanes 4-7] of row 2h, then the same of row 2h + 1
                    let q = &acc[4 * g..4 * g + 4];
                    let t = hadd(hadd(q[0], q[1]), hadd(q[2], q[3]));
                    let lo = _mm_add_ps(
                        _mm512_extractf32x4_ps::<0>(t),
                        _mm512_extractf32x4_ps::<1>(t),
                    );
                    let hi = _mm_add_ps(
                        _mm512_extractf32x4_ps::<2>(t),
                        _mm512_extractf32x4_ps::<3>(t),
                    );
                    _mm_storeu_ps(out[2 * h][4 * g..].as_mut_ptr(), lo);
                    _mm_storeu_ps(out[2 * h + 1][4 * g..].as_mut_ptr(), hi);
                }
            }
            out
        }
    }
}
