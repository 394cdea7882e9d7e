use super::*;

fn naive(a: &MatRef, b: &MatRef) -> Vec<f64> {
    let mut c = vec![0.0f64; a.rows * b.cols];
    for i in 0..a.rows {
        for j in 0..b.cols {
            let mut s = 0.0f64;
            for k in 0..a.cols {
                let av = a.data[(i as isize * a.rs + k as isize * a.cs) as usize] as f64;
                let bv = b.data[(k as isize * b.rs + j as isize * b.cs) as usize] as f64;
                s += av * bv;
            }
            c[i * b.cols + j] = s;
        }
    }
    c
}

/// matrixmultiply's sgemm: the independent implementation ours is held against.
fn reference(alpha: f32, a: &MatRef, b: &MatRef, beta: f32, c: &mut [f32]) {
    // SAFETY: the views were built by MatRef's constructors over their own slices, and c
    // holds a.rows x b.cols values.
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            alpha,
            a.data.as_ptr(),
            a.rs,
            a.cs,
            b.data.as_ptr(),
            b.rs,
            b.cs,
            beta,
            c.as_mut_ptr(),
            b.cols as isize,
            1,
        )
    }
}

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::rng::SeededRng::new(seed);
    (0..n).map(|_| rng.uniform_f32() - 0.5).collect()
}

/// |x - y| within a few ulps of the sum of |terms| (what any summation order may differ by).
fn close(x: f32, y: f64, scale: f64, k: usize) -> bool {
    (x as f64 - y).abs() <= 4.0 * f32::EPSILON as f64 * (k as f64).sqrt().max(1.0) * scale + 1e-30
}

#[test]
fn hand_worked_2x2() {
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [5.0, 6.0, 7.0, 8.0];
    let mut c = [1.0f32; 4];
    sgemm(1.0, MatRef::rm(&a, 2, 2), MatRef::rm(&b, 2, 2), 1.0, &mut c);
    assert_eq!(c, [20.0, 23.0, 44.0, 51.0]);
    let mut c = [0.0f32; 4];
    // a^T b: [[1,3],[2,4]] [[5,6],[7,8]] = [[26,30],[38,44]]
    sgemm(
        1.0,
        MatRef::rm_t(&a, 2, 2),
        MatRef::rm(&b, 2, 2),
        0.0,
        &mut c,
    );
    assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
    // alpha 2, beta 0.5 on c = [[26,30],[38,44]]: 2 * [[19,22],[43,50]] + c / 2
    sgemm(2.0, MatRef::rm(&a, 2, 2), MatRef::rm(&b, 2, 2), 0.5, &mut c);
    assert_eq!(c, [51.0, 59.0, 105.0, 122.0]);
}

/// Sizes around every blocking edge: MR = 6, NR = 16, KC = 256, MC = 144, and beyond.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 5, 7),
    (6, 16, 16),
    (7, 17, 15),
    (17, 33, 9),
    (64, 27, 130),
    (145, 257, 33),
    (13, 600, 70),
    (290, 40, 300),
];

#[test]
fn matches_naive_and_matrixmultiply_on_odd_sizes_and_transposes() {
    for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
        let a = rand(m * k, 2 * s as u64);
        let b = rand(k * n, 2 * s as u64 + 1);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let am = if ta {
                MatRef::rm_t(&a, k, m)
            } else {
                MatRef::rm(&a, m, k)
            };
            let bm = if tb {
                MatRef::rm_t(&b, n, k)
            } else {
                MatRef::rm(&b, k, n)
            };
            let want = naive(&am, &bm);
            let mut c = vec![f32::NAN; m * n]; // beta 0 must not read C
            sgemm(1.0, am, bm, 0.0, &mut c);
            let mut r = vec![0.0f32; m * n];
            reference(1.0, &am, &bm, 0.0, &mut r);
            // the scale of an entry: sum of |a||b| <= k * 0.25
            for ((x, y), z) in c.iter().zip(&want).zip(&r) {
                assert!(close(*x, *y, k as f64 * 0.25, k), "{m}x{k}x{n} {x} vs {y}");
                assert!(
                    (x - z).abs() <= 1e-5 * (k as f32).sqrt(),
                    "{m}x{k}x{n} vs matrixmultiply {x} {z}"
                );
            }
        }
    }
}

#[test]
fn alpha_and_beta_follow_the_formula() {
    let (m, k, n) = (19, 300, 37);
    let a = rand(m * k, 5);
    let b = rand(k * n, 6);
    let c0 = rand(m * n, 7);
    let (am, bm) = (MatRef::rm(&a, m, k), MatRef::rm(&b, k, n));
    let ab = naive(&am, &bm);
    for (alpha, beta) in [
        (1.0f32, 1.0f32),
        (0.5, 1.0),
        (-2.0, 0.25),
        (1.0, 0.0),
        (0.0, 3.0),
    ] {
        let mut c = c0.clone();
        sgemm(alpha, am, bm, beta, &mut c);
        for i in 0..m * n {
            let want = alpha as f64 * ab[i] + beta as f64 * c0[i] as f64;
            assert!(
                close(c[i], want, k as f64 * 0.25 + 1.0, k),
                "alpha {alpha} beta {beta}: {} vs {want}",
                c[i]
            );
        }
    }
}

#[test]
fn parallel_is_bit_identical_to_serial() {
    // products of 2^17..2^23 multiply-adds are cut in two for the spinning helper
    // (`ops::team`), larger ones over rayon's pool: both kinds are here
    for &(m, k, n) in &[
        (300, 300, 300),
        (20, 500, 700),
        (700, 64, 20),
        (1, 2000, 300),
        // two column blocks (N > NC)
        (40, 110, 4500),
    ] {
        let a = rand(m * k, 11);
        let b = rand(k * n, 12);
        let (am, bm) = (MatRef::rm(&a, m, k), MatRef::rm(&b, k, n));
        let mut s = vec![0.0f32; m * n];
        let mut p = vec![0.0f32; m * n];
        sgemm(1.0, am, bm, 0.0, &mut s);
        sgemm_par(1.0, am, bm, 0.0, &mut p);
        assert_eq!(s, p, "{m}x{k}x{n}");
        // and on a pool of another size
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        let mut q = vec![0.0f32; m * n];
        pool.install(|| sgemm_par(1.0, am, bm, 0.0, &mut q));
        assert_eq!(s, q, "{m}x{k}x{n} on 3 threads");
    }
}

#[test]
fn image_layout_writes_each_image_in_nchw() {
    // [cout, images x hw] product stored as images x [cout, hw]: the plain product, permuted.
    for &(cout, k, hw, images) in &[
        (16, 27, 1024, 2),
        (7, 40, 4, 9),
        (32, 300, 16, 5),
        (5, 3, 1, 40),
    ] {
        let n = hw * images;
        let a = rand(cout * k, 21);
        let b = rand(k * n, 22);
        let (am, bm) = (MatRef::rm(&a, cout, k), MatRef::rm(&b, k, n));
        let mut plain = vec![0.0f32; cout * n];
        sgemm(1.0, am, bm, 0.0, &mut plain);
        let mut y = vec![f32::NAN; cout * n];
        gemm(
            1.0,
            &am,
            &bm,
            0.0,
            &mut y,
            CLayout::images(cout, hw, images),
            true,
        );
        for img in 0..images {
            for co in 0..cout {
                for p in 0..hw {
                    assert_eq!(
                        y[img * cout * hw + co * hw + p],
                        plain[co * n + img * hw + p],
                        "cout {cout} hw {hw} images {images}"
                    );
                }
            }
        }
        // accumulating into it (beta 1) does what it does on the plain layout
        gemm(
            1.0,
            &am,
            &bm,
            1.0,
            &mut y,
            CLayout::images(cout, hw, images),
            false,
        );
        sgemm(1.0, am, bm, 1.0, &mut plain);
        for img in 0..images {
            for co in 0..cout {
                for p in 0..hw {
                    assert_eq!(
                        y[img * cout * hw + co * hw + p],
                        plain[co * n + img * hw + p]
                    );
                }
            }
        }
    }
}

#[test]
fn empty_and_zero_depth_products() {
    let mut c = vec![3.0f32; 6];
    // k = 0: C = beta C
    sgemm(
        1.0,
        MatRef::rm(&[], 2, 0),
        MatRef::rm(&[], 0, 3),
        0.5,
        &mut c,
    );
    assert_eq!(c, vec![1.5; 6]);
    sgemm(
        1.0,
        MatRef::rm(&[], 2, 0),
        MatRef::rm(&[], 0, 3),
        0.0,
        &mut c,
    );
    assert_eq!(c, vec![0.0; 6]);
    let mut e: Vec<f32> = Vec::new();
    sgemm(
        1.0,
        MatRef::rm(&[], 0, 4),
        MatRef::rm(&[0.0; 12], 4, 3),
        0.0,
        &mut e,
    );
}

#[test]
#[should_panic(expected = "gemm C layout")]
fn a_c_too_small_is_a_caller_bug_caught_before_any_write() {
    let a = [1.0f32; 4];
    let mut c = [0.0f32; 3];
    sgemm(1.0, MatRef::rm(&a, 2, 2), MatRef::rm(&a, 2, 2), 0.0, &mut c);
}

#[test]
fn nt_dot_products_match_naive() {
    // m % 3, n % 4 and len % 8 tails, len past the 512-pixel block, row strides > len
    for &(m, n, len, ld_extra) in &[
        (1, 1, 1, 0),
        (3, 4, 8, 0),
        (5, 7, 13, 3),
        (16, 144, 1024, 0),
        (7, 10, 1300, 5),
    ] {
        let (lda, ldb) = (len + ld_extra, len + 2 * ld_extra);
        let a = rand((m - 1) * lda + len, 31);
        let b = rand((n - 1) * ldb + len, 32);
        let c0 = rand(m * n, 33);
        let mut c = c0.clone();
        gemm_nt_acc(m, n, len, &a, lda, &b, ldb, &mut c, n);
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..len)
                    .map(|p| a[i * lda + p] as f64 * b[j * ldb + p] as f64)
                    .sum();
                let want = c0[i * n + j] as f64 + dot;
                assert!(
                    close(c[i * n + j], want, len as f64 * 0.25 + 1.0, len),
                    "{m}x{n}x{len}: {} vs {want}",
                    c[i * n + j]
                );
            }
        }
    }
}

/// A row-major A that can only be packed: `gemm` must take its packing path.
struct PackOnly<'a>(MatRef<'a>);

impl PackA for PackOnly<'_> {
    fn rows(&self) -> usize {
        PackA::rows(&self.0)
    }
    fn depth(&self) -> usize {
        PackA::depth(&self.0)
    }
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, out: &mut [f32]) {
        self.0.pack_a(i0, mc, p0, kc, out)
    }
}

#[test]
fn reading_a_in_place_gives_the_packed_bits() {
    // narrow products (n <= 256, m <= 144) read a row-major A in place; rows not a multiple
    // of 6 leave a packed tail panel; depths past KC = 256 take several depth blocks
    for &(m, k, n) in &[
        (6, 5, 4),
        (16, 144, 4),
        (7, 17, 15),
        (128, 1152, 16),
        (130, 300, 64),
    ] {
        let a = rand(m * k, 40 + m as u64);
        let b = rand(k * n, 41 + n as u64);
        let (am, bm) = (MatRef::rm(&a, m, k), MatRef::rm(&b, k, n));
        assert!(am.in_place().is_some());
        for beta in [0.0, 1.0] {
            let c0 = rand(m * n, 42);
            let (mut direct, mut packed) = (c0.clone(), c0.clone());
            let lay = CLayout::row_major(m, n);
            gemm(1.5, &am, &bm, beta, &mut direct, lay, false);
            gemm(1.5, &PackOnly(am), &bm, beta, &mut packed, lay, false);
            assert_eq!(direct, packed, "{m}x{k}x{n} beta {beta}");
            let want = naive(&am, &bm);
            for (i, (x, y)) in direct.iter().zip(&want).enumerate() {
                let y = 1.5 * y + beta as f64 * c0[i] as f64;
                assert!(
                    close(*x, y, 1.5 * k as f64 * 0.25 + 1.0, k),
                    "{m}x{k}x{n} {x} vs {y}"
                );
            }
        }
    }
}

#[test]
fn every_kernel_reads_packed_and_in_place_a_alike() {
    use super::kernel::{APanel, BPanel, MR, NR, Store, tile};
    let kc = 37;
    let lda = kc + 3;
    // A: MR rows of a row-major matrix with padding; its packed copy, k-major
    let a = rand(MR * lda, 50);
    let packed: Vec<f32> = (0..kc)
        .flat_map(|k| (0..MR).map(move |i| (k, i)))
        .map(|(k, i)| a[i * lda + k])
        .collect();
    let b = rand(kc * NR, 51);
    let want: Vec<f64> = (0..MR * NR)
        .map(|t| {
            (0..kc)
                .map(|k| a[(t / NR) * lda + k] as f64 * b[k * NR + t % NR] as f64)
                .sum()
        })
        .collect();
    for isa in super::kernel::supported() {
        for panel in [
            APanel::packed(packed.as_ptr()),
            APanel {
                ptr: a.as_ptr(),
                rs: lda,
                cs: 1,
            },
        ] {
            let mut c = vec![f32::NAN; MR * NR];
            // SAFETY: the panel addresses MR x kc values of `a` or `packed`, b holds kc * NR,
            // c is one MR x NR tile with row stride NR.
            unsafe {
                tile(
                    isa,
                    kc,
                    panel,
                    BPanel::packed(b.as_ptr()),
                    c.as_mut_ptr(),
                    NR,
                    1.0,
                    Store::Overwrite,
                    std::ptr::null(),
                )
            };
            for (x, y) in c.iter().zip(&want) {
                assert!(close(*x, *y, kc as f64 * 0.25, kc), "{isa:?}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn every_kernel_reads_packed_and_in_place_b_alike() {
    use super::kernel::{APanel, BPanel, MR, NR, Store, tile};
    let kc = 29;
    let a = rand(kc * MR, 52); // packed, k-major
    // B's rows scattered over a larger buffer at arbitrary (unaligned, unordered) offsets
    let data = rand(kc * 40 + NR, 53);
    let koff: Vec<usize> = (0..kc).map(|k| (k * 17 + 5) % (kc * 40)).collect();
    let packed_b: Vec<f32> = koff
        .iter()
        .flat_map(|&o| data[o..o + NR].to_vec())
        .collect();
    for isa in super::kernel::supported() {
        let mut tiles = Vec::new();
        for b in [
            BPanel::packed(packed_b.as_ptr()),
            BPanel {
                ptr: data.as_ptr(),
                koff: koff.as_ptr(),
            },
        ] {
            let mut c = vec![f32::NAN; MR * NR];
            // SAFETY: A holds MR x kc packed values; every B row (packed, or data[koff[k]..]
            // with koff[k] + NR <= data.len()) holds NR; c is one MR x NR tile.
            unsafe {
                tile(
                    isa,
                    kc,
                    APanel::packed(a.as_ptr()),
                    b,
                    c.as_mut_ptr(),
                    NR,
                    1.0,
                    Store::Overwrite,
                    std::ptr::null(),
                )
            };
            tiles.push(c);
        }
        assert_eq!(tiles[0], tiles[1], "{isa:?}: packed vs in-place B");
        // the fused epilogue: max(v + bias[row], 0), as `bias_relu` computes it afterwards
        let bias: Vec<f32> = (0..MR).map(|i| i as f32 - 2.5).collect();
        let mut fused = vec![f32::NAN; MR * NR];
        // SAFETY: as above; bias holds MR values.
        unsafe {
            tile(
                isa,
                kc,
                APanel::packed(a.as_ptr()),
                BPanel::packed(packed_b.as_ptr()),
                fused.as_mut_ptr(),
                NR,
                1.0,
                Store::Overwrite,
                bias.as_ptr(),
            )
        };
        let mut want = tiles[0].clone();
        for (row, &b) in want.chunks_exact_mut(NR).zip(&bias) {
            super::kernel::bias_relu(row, b);
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&want), "{isa:?}: fused bias + ReLU");
        assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0));
        for (t, x) in tiles[0].iter().enumerate() {
            let (i, j) = (t / NR, t % NR);
            let y: f64 = (0..kc)
                .map(|k| a[k * MR + i] as f64 * data[koff[k] + j] as f64)
                .sum();
            assert!(close(*x, y, kc as f64 * 0.25, kc), "{isa:?}: {x} vs {y}");
        }
    }
}

#[test]
fn in_place_b_refuses_reads_past_its_data() {
    use super::InPlaceB;
    let data = vec![0.0f32; 100];
    let koff = [0usize, 10, 20];
    // 2 segments of one 16-wide row, 40 apart: the last panel reads up to 40 + 20 + 16 = 76
    assert!(InPlaceB::new(&data, &koff, 32, (16, 40), (16, 16)).is_some());
    // 70 apart: the last panel would read up to 70 + 20 + 16 = 106 > 100
    assert!(InPlaceB::new(&data, &koff, 32, (16, 70), (16, 16)).is_none());
    // rows that are not whole micro-panels, or a ragged column count
    assert!(InPlaceB::new(&data, &koff, 16, (8, 8), (8, 8)).is_none());
    assert!(InPlaceB::new(&data, &koff, 24, (24, 24), (24, 24)).is_none());
}

/// Every x86 kernel (AVX2, AVX-512), one panel or two at a time, packed or in place, with or
/// without the bias + ReLU epilogue, overwrite or accumulate: the same bits as the AVX2
/// kernel's single tiles for the same operands, since each element is the same chain of FMAs
/// over k (what makes results independent of the CPU and of the grouping). The portable
/// kernel (whose `mul_add` is fused only where the build targets FMA) is held to f64.
#[test]
fn every_kernel_and_panel_grouping_gives_the_same_bits() {
    use super::kernel::{APanel, BPanel, Isa, MR, NR, Store, tile, tiles};
    let kc = 45;
    let lda = kc + 2;
    let a = rand(MR * lda, 60);
    let packed_a: Vec<f32> = (0..kc)
        .flat_map(|k| (0..MR).map(move |i| (k, i)))
        .map(|(k, i)| a[i * lda + k])
        .collect();
    // two B panels, packed, and the same rows scattered for the in-place read (one koff,
    // the second panel NR floats further on)
    let data = rand(kc * 50 + 2 * NR, 61);
    let koff: Vec<usize> = (0..kc).map(|k| (k * 23 + 7) % (kc * 50)).collect();
    let packed_b: Vec<Vec<f32>> = (0..2)
        .map(|p| {
            koff.iter()
                .flat_map(|&o| data[o + p * NR..o + p * NR + NR].to_vec())
                .collect()
        })
        .collect();
    let bias = rand(MR, 62);
    let c0 = rand(MR * 2 * NR, 63);
    let run = |isa: Isa, two: bool, in_a: bool, in_b: bool, store: Store, with_bias: bool| {
        let ap = if in_a {
            APanel {
                ptr: a.as_ptr(),
                rs: lda,
                cs: 1,
            }
        } else {
            APanel::packed(packed_a.as_ptr())
        };
        let bp = |p: usize| {
            if in_b {
                BPanel {
                    ptr: data[p * NR..].as_ptr(),
                    koff: koff.as_ptr(),
                }
            } else {
                BPanel::packed(packed_b[p].as_ptr())
            }
        };
        // C: MR rows of 2 NR, the two tiles side by side
        let mut c = c0.clone();
        let bias_ptr = if with_bias {
            bias.as_ptr()
        } else {
            std::ptr::null()
        };
        let cp = c.as_mut_ptr();
        // SAFETY: A addresses MR x kc values (packed, or rows lda apart); each B panel kc rows
        // of NR (packed, or data[p * NR + koff[k]..] with room for NR); C holds MR rows of
        // 2 NR and each tile is NR wide at column 0 or NR; bias holds MR.
        unsafe {
            if two {
                tiles::<2>(
                    isa,
                    kc,
                    ap,
                    [bp(0), bp(1)],
                    [cp, cp.add(NR)],
                    2 * NR,
                    0.75,
                    store,
                    bias_ptr,
                )
            } else {
                for p in 0..2 {
                    tile(
                        isa,
                        kc,
                        ap,
                        bp(p),
                        cp.add(p * NR),
                        2 * NR,
                        0.75,
                        store,
                        bias_ptr,
                    )
                }
            }
        }
        c
    };
    // the independent expectation for one case, in f64
    let want: Vec<f64> = (0..MR * 2 * NR)
        .map(|t| {
            let (i, j) = (t / (2 * NR), t % (2 * NR));
            let s: f64 = (0..kc)
                .map(|k| a[i * lda + k] as f64 * data[koff[k] + j] as f64)
                .sum();
            0.75 * s + c0[t] as f64
        })
        .collect();
    let portable = run(Isa::Portable, false, false, false, Store::Accumulate, false);
    for (x, y) in portable.iter().zip(&want) {
        assert!(close(*x, *y, kc as f64 * 0.25, kc), "portable: {x} vs {y}");
    }
    let isas = super::kernel::supported();
    let base_isa = *isas.iter().rev().nth(1).unwrap_or(&Isa::Portable);
    for isa in isas {
        if isa == Isa::Portable {
            continue;
        }
        for two in [false, true] {
            for (in_a, in_b) in [(false, false), (true, false), (false, true), (true, true)] {
                for store in [Store::Overwrite, Store::Accumulate] {
                    for with_bias in [false, true] {
                        let got = run(isa, two, in_a, in_b, store, with_bias);
                        let base = run(base_isa, false, false, false, store, with_bias);
                        assert!(
                            got.iter()
                                .zip(&base)
                                .all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{isa:?} two {two} in-place A {in_a} B {in_b} {store:?} bias \
                             {with_bias}: bits differ from {base_isa:?}'s"
                        );
                    }
                }
            }
        }
    }
}

/// The weight-gradient kernel on every ISA this CPU has: the same bits as the AVX2 (or
/// portable) tiles, over edge tiles in both dimensions, several pixel blocks and a tail of
/// fewer than 8 pixels; and the values of f64 dot products.
#[test]
fn nt_dot_products_have_the_same_bits_on_every_isa() {
    use super::dot::nt_acc_with;
    let (m, n, len) = (7, 13, 2 * 1024 + 21);
    let (lda, ldb, ldc) = (len + 3, len + 1, n + 2);
    let a = rand(m * lda, 70);
    let b = rand(n * ldb, 71);
    let c0 = rand(m * ldc, 72);
    let isas = super::kernel::supported();
    let run = |isa| {
        let mut c = c0.clone();
        nt_acc_with(isa, m, n, len, &a, lda, &b, ldb, &mut c, ldc);
        c
    };
    let base = run(*isas.iter().rev().nth(1).unwrap_or(&isas[0]));
    for i in 0..m {
        for j in 0..ldc {
            let want = if j < n {
                c0[i * ldc + j] as f64
                    + (0..len)
                        .map(|p| a[i * lda + p] as f64 * b[j * ldb + p] as f64)
                        .sum::<f64>()
            } else {
                c0[i * ldc + j] as f64 // past n: untouched
            };
            let got = base[i * ldc + j];
            assert!(
                close(got, want, len as f64 * 0.25, len),
                "({i}, {j}): {got} vs {want}"
            );
        }
    }
    for isa in isas {
        if isa == super::kernel::Isa::Portable {
            continue;
        }
        let got = run(isa);
        assert!(
            got.iter()
                .zip(&base)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{isa:?}: bits differ from the AVX2 kernel's"
        );
    }
}

/// The weight-gradient kernels' summation order, written out one entry at a time: per block
/// of 1024 pixels, 8 lanes of fused multiply-add chains (lane l takes pixels l, l + 8, ..),
/// the lanes added as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), the block's last len % 8 pixels
/// fused in one by one, and the block's sum added to C.
fn nt_acc_by_definition(
    (m, n, len): (usize, usize, usize),
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    c: &mut [f32],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            for p0 in (0..len).step_by(1024) {
                let pl = 1024.min(len - p0);
                let l8 = pl / 8 * 8;
                let (ar, br) = (&a[i * lda + p0..][..pl], &b[j * ldb + p0..][..pl]);
                let mut l = [0.0f32; 8];
                for p in 0..l8 {
                    l[p % 8] = ar[p].mul_add(br[p], l[p % 8]);
                }
                let mut s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
                for p in l8..pl {
                    s = ar[p].mul_add(br[p], s);
                }
                c[i * ldc + j] += s;
            }
        }
    }
}

/// Every SIMD weight-gradient kernel gives the bits of the order written out above (so the
/// tiling, the choice of which operand is kept in L1 and the vectorised tails change no
/// training result), on shapes that exercise both orientations of the AVX2 tiles, edge
/// tiles in both dimensions, tails of 1..7 pixels, blocks past 1024 pixels and C's stride.
#[test]
fn nt_dot_products_follow_the_defined_order_bit_for_bit() {
    use super::dot::nt_acc_with;
    let shapes = [
        (16, 144, 1024, 0, 0),
        (128, 27, 52, 3, 1),
        (27, 128, 50, 1, 0),
        (7, 13, 2 * 1024 + 21, 3, 2),
        (5, 5, 7, 0, 0),
        (4, 3, 1, 0, 0),
        (1, 1, 9, 0, 0),
        (12, 9, 1031, 5, 0),
    ];
    for (m, n, len, pad, cpad) in shapes {
        let (lda, ldb, ldc) = (len + pad, len + 2 * pad, n + cpad);
        let a = rand(m * lda, 80);
        let b = rand(n * ldb, 81);
        let c0 = rand(m * ldc, 82);
        let mut want = c0.clone();
        nt_acc_by_definition((m, n, len), (&a, lda), (&b, ldb), &mut want, ldc);
        for isa in super::kernel::supported() {
            if isa == super::kernel::Isa::Portable {
                continue; // `wide`'s mul_add need not be fused without FMA
            }
            let mut got = c0.clone();
            nt_acc_with(isa, m, n, len, &a, lda, &b, ldb, &mut got, ldc);
            let bad = got
                .iter()
                .zip(&want)
                .position(|(x, y)| x.to_bits() != y.to_bits());
            assert!(
                bad.is_none(),
                "{isa:?} {m}x{n}x{len}: C[{}] = {} where the defined order gives {}",
                bad.unwrap_or(0),
                got[bad.unwrap_or(0)],
                want[bad.unwrap_or(0)]
            );
        }
    }
}

#[test]
fn uninit_output_gets_every_element_once_with_gemms_bits() {
    use std::mem::MaybeUninit;
    // NaN where the output will go: an element read before it is written (an Accumulate
    // store) or never written comes out NaN, not gemm's value.
    // (cout, k, hw, images): partial row panels (7, 16 = 6 + 6 + 4), partial column panels,
    // segments shorter than a panel (hw 4, 1), depth over one KC block (300), depth 0.
    for &(cout, k, hw, images) in &[
        (16, 27, 1024, 2),
        (7, 40, 4, 9),
        (32, 300, 16, 5),
        (5, 3, 1, 40),
        (6, 700, 33, 1),
        (3, 0, 8, 2),
    ] {
        let n = hw * images;
        let a = rand(cout * k, 31);
        let b = rand(k * n, 32);
        let bias = rand(cout, 33);
        let (am, bm) = (MatRef::rm(&a, cout, k), MatRef::rm(&b, k, n));
        let lay = CLayout::images(cout, hw, images);
        for par in [false, true] {
            for with_bias in [false, true] {
                let mut want = vec![0.0f32; cout * n];
                if with_bias {
                    gemm_bias_relu(1.0, &am, &bm, &mut want, lay, par, &bias);
                } else {
                    gemm(1.0, &am, &bm, 0.0, &mut want, lay, par);
                }
                let mut got = vec![MaybeUninit::new(f32::NAN); cout * n];
                let bias_arg = with_bias.then_some(&bias[..]);
                cpu::gemm_uninit(1.0, &am, &bm, &mut got, lay, par, bias_arg);
                // SAFETY: filled with NaN above, so initialised whatever gemm_uninit did
                let got: Vec<u32> = got
                    .iter()
                    .map(|v| unsafe { v.assume_init() }.to_bits())
                    .collect();
                let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                assert_eq!(
                    got, want,
                    "cout {cout} k {k} hw {hw} images {images} par {par} bias {with_bias}"
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "gemm_uninit: C layout covers C")]
fn uninit_output_larger_than_the_layout_is_a_caller_bug() {
    let a = [1.0f32; 4];
    let mut c = [std::mem::MaybeUninit::<f32>::uninit(); 5];
    let lay = CLayout::row_major(2, 2);
    cpu::gemm_uninit(
        1.0,
        &MatRef::rm(&a, 2, 2),
        &MatRef::rm(&a, 2, 2),
        &mut c,
        lay,
        false,
        None,
    );
}
