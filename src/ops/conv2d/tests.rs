use super::Conv2dParams;
use crate::backend::{Backend, Cpu};
use crate::gradcheck::{check_coords, check_grad, random_tensor, random_vec, weighted_sum};
use crate::tensor::Shape;

/// Direct 7-loop convolution in f64: the independent reference.
fn naive(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], p: Conv2dParams) -> Vec<f32> {
    let [n, cin, h, wd] = xs;
    let [cout, _, kh, kw] = ws;
    let ho = (h + 2 * p.pad - kh) / p.stride + 1;
    let wo = (wd + 2 * p.pad - kw) / p.stride + 1;
    let mut y = vec![0.0f32; n * cout * ho * wo];
    for b in 0..n {
        for o in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = 0.0f64;
                    for c in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.stride + ky) as isize - p.pad as isize;
                                let ix = (ox * p.stride + kx) as isize - p.pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    s += x[((b * cin + c) * h + iy as usize) * wd + ix as usize]
                                        as f64
                                        * w[((o * cin + c) * kh + ky) * kw + kx] as f64;
                                }
                            }
                        }
                    }
                    y[((b * cout + o) * ho + oy) * wo + ox] = s as f32;
                }
            }
        }
    }
    y
}

#[test]
fn hand_worked_3x3_same_padding() {
    let cpu = Cpu::new();
    // 1x1x3x3 input 1..9, all-ones 3x3 kernel, pad 1: each output is the sum of its
    // in-bounds neighbourhood.
    let x = cpu
        .from_host(
            Shape::new([1, 1, 3, 3]),
            &[1., 2., 3., 4., 5., 6., 7., 8., 9.],
        )
        .unwrap();
    let w = cpu.from_host(Shape::new([1, 1, 3, 3]), &[1.0; 9]).unwrap();
    let y = cpu
        .to_host(&cpu.conv2d_forward(&x, &w, Conv2dParams::SAME3X3).unwrap())
        .unwrap();
    assert_eq!(y, [12., 21., 16., 27., 45., 33., 24., 39., 28.]);
}

#[test]
fn matches_direct_convolution_on_many_geometries() {
    let cpu = Cpu::new();
    let cases = [
        (
            [2, 3, 8, 8],
            [4, 3, 3, 3],
            Conv2dParams { stride: 1, pad: 1 },
        ),
        (
            [1, 2, 7, 5],
            [3, 2, 3, 3],
            Conv2dParams { stride: 2, pad: 1 },
        ),
        (
            [3, 4, 6, 6],
            [5, 4, 1, 1],
            Conv2dParams { stride: 1, pad: 0 },
        ),
        (
            [2, 3, 11, 9],
            [2, 3, 7, 7],
            Conv2dParams { stride: 2, pad: 3 },
        ),
        (
            [5, 1, 4, 4],
            [2, 1, 2, 2],
            Conv2dParams { stride: 2, pad: 0 },
        ),
    ];
    for (i, (xs, ws, p)) in cases.into_iter().enumerate() {
        let x = random_tensor(&cpu, xs, 10 + i as u64);
        let w = random_tensor(&cpu, ws, 20 + i as u64);
        let got = cpu
            .to_host(&cpu.conv2d_forward(&x, &w, p).unwrap())
            .unwrap();
        let want = naive(&x.storage, xs, &w.storage, ws, p);
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "case {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn backward_matches_finite_differences() {
    let cpu = Cpu::new();
    let cases = [
        (
            [2, 3, 6, 6],
            [4, 3, 3, 3],
            Conv2dParams { stride: 1, pad: 1 },
        ),
        (
            [1, 2, 7, 5],
            [3, 2, 3, 3],
            Conv2dParams { stride: 2, pad: 1 },
        ),
        (
            [3, 4, 5, 5],
            [2, 4, 1, 1],
            Conv2dParams { stride: 1, pad: 0 },
        ),
        (
            [6, 2, 9, 9],
            [2, 2, 7, 7],
            Conv2dParams { stride: 2, pad: 3 },
        ),
        // stride 1 with pad < k - 1: dx as a transposed convolution padded by k - 1 - pad
        (
            [2, 3, 6, 6],
            [4, 3, 3, 3],
            Conv2dParams { stride: 1, pad: 0 },
        ),
        (
            [1, 2, 7, 7],
            [3, 2, 5, 5],
            Conv2dParams { stride: 1, pad: 1 },
        ),
    ];
    for (i, (xs, ws, p)) in cases.into_iter().enumerate() {
        let x = random_tensor(&cpu, xs, 30 + i as u64);
        let w = random_tensor(&cpu, ws, 40 + i as u64);
        // d/dx
        check_grad(
            &cpu,
            &x,
            1e-2,
            1e-3,
            |t| cpu.conv2d_forward(t, &w, p),
            |t, dy| Ok(cpu.conv2d_backward(t, &w, dy, p, true)?.0.expect("dx")),
        );
        // d/dw
        let y = cpu.conv2d_forward(&x, &w, p).unwrap();
        let r = random_vec(y.numel(), 0xD1CE);
        let rt = cpu.from_host(y.shape.clone(), &r).unwrap();
        let (dx_none, dw) = cpu.conv2d_backward(&x, &w, &rt, p, false).unwrap();
        assert!(dx_none.is_none());
        check_coords(&w.storage, &dw.storage, 1e-2, 1e-3, "conv weight", |wv| {
            let wt = cpu.from_host(w.shape.clone(), wv).unwrap();
            weighted_sum(&cpu.conv2d_forward(&x, &wt, p).unwrap().storage, &r)
        });
    }
}

#[test]
fn weight_gradient_does_not_depend_on_the_thread_count() {
    let x = random_tensor(&Cpu::new(), [13, 3, 8, 8], 1);
    let w = random_tensor(&Cpu::new(), [4, 3, 3, 3], 2);
    let dy = random_tensor(&Cpu::new(), [13, 4, 8, 8], 3);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            Cpu::new()
                .conv2d_backward(&x, &w, &dy, Conv2dParams::SAME3X3, true)
                .unwrap()
        })
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(a.1.storage, b.1.storage);
    assert_eq!(a.0.unwrap().storage, b.0.unwrap().storage);
}

#[test]
fn bad_shapes_are_errors() {
    let cpu = Cpu::new();
    let x = cpu.zeros(&Shape::new([1, 3, 4, 4])).unwrap();
    let w = cpu.zeros(&Shape::new([2, 2, 3, 3])).unwrap();
    let e = cpu
        .conv2d_forward(&x, &w, Conv2dParams::SAME3X3)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("3 channels") && e.contains("[2, 2, 3, 3]"),
        "{e}"
    );
    let big = cpu.zeros(&Shape::new([2, 3, 7, 7])).unwrap();
    assert!(
        cpu.conv2d_forward(&x, &big, Conv2dParams { stride: 1, pad: 0 })
            .is_err()
    );
    let flat = cpu.zeros(&Shape::new([3, 4])).unwrap();
    assert!(
        cpu.conv2d_forward(&flat, &w, Conv2dParams::SAME3X3)
            .is_err()
    );
    let w_ok = cpu.zeros(&Shape::new([2, 3, 3, 3])).unwrap();
    let dy_bad = cpu.zeros(&Shape::new([1, 2, 5, 4])).unwrap();
    assert!(
        cpu.conv2d_backward(&x, &w_ok, &dy_bad, Conv2dParams::SAME3X3, true)
            .is_err()
    );
    assert!(
        cpu.conv2d_forward(&x, &w_ok, Conv2dParams { stride: 0, pad: 1 })
            .is_err()
    );
}

/// Shapes where one GEMM covers several images (small outputs, bigger batches): forward
/// against the direct convolution, backward against a per-image f64 reference.
#[test]
fn grouped_images_match_the_direct_convolution() {
    let cpu = Cpu::new();
    for (i, (xs, ws)) in [
        ([50, 6, 2, 2], [5, 6, 3, 3]),
        ([13, 4, 4, 4], [3, 4, 3, 3]),
        ([7, 2, 8, 8], [4, 2, 3, 3]),
        // one image: its GEMMs are cut over the thread pool instead
        ([1, 16, 32, 32], [16, 16, 3, 3]),
        ([1, 64, 4, 4], [70, 64, 3, 3]),
    ]
    .into_iter()
    .enumerate()
    {
        let p = Conv2dParams::SAME3X3;
        let g = super::ConvGeom::new(&Shape::new(xs), &Shape::new(ws), p).unwrap();
        let groups = super::cpu::groups(g.n, g.ho * g.wo);
        assert_eq!(groups.first().map(|r| r.start), Some(0));
        assert_eq!(groups.last().map(|r| r.end), Some(g.n));
        assert!(
            groups
                .windows(2)
                .all(|w| w[0].end == w[1].start && !w[0].is_empty())
        );
        let x = random_tensor(&cpu, xs, 50 + i as u64);
        let w = random_tensor(&cpu, ws, 60 + i as u64);
        let y = cpu.conv2d_forward(&x, &w, p).unwrap();
        let want = naive(&x.storage, xs, &w.storage, ws, p);
        for (a, b) in y.storage.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "case {i}: {a} vs {b}"
            );
        }
        // backward: the gradient of sum(r * conv(x, w)) by linearity, in f64
        let r = random_vec(y.numel(), 70 + i as u64);
        let rt = cpu.from_host(y.shape.clone(), &r).unwrap();
        let (dx, dw) = cpu.conv2d_backward(&x, &w, &rt, p, true).unwrap();
        let dx = dx.unwrap();
        let [n, cin, h, wd] = xs;
        let [cout, _, kh, kw] = ws;
        let mut dx_want = vec![0.0f64; x.numel()];
        let mut dw_want = vec![0.0f64; w.numel()];
        for b in 0..n {
            for o in 0..cout {
                for oy in 0..h {
                    for ox in 0..wd {
                        let rv = r[((b * cout + o) * h + oy) * wd + ox] as f64;
                        for c in 0..cin {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let (iy, ix) = (
                                        oy as isize + ky as isize - 1,
                                        ox as isize + kx as isize - 1,
                                    );
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd
                                    {
                                        let xi =
                                            ((b * cin + c) * h + iy as usize) * wd + ix as usize;
                                        let wi = ((o * cin + c) * kh + ky) * kw + kx;
                                        dx_want[xi] += rv * w.storage[wi] as f64;
                                        dw_want[wi] += rv * x.storage[xi] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for (a, b) in dx.storage.iter().zip(&dx_want) {
            assert!(
                (*a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "case {i} dx: {a} vs {b}"
            );
        }
        for (a, b) in dw.storage.iter().zip(&dw_want) {
            assert!(
                (*a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "case {i} dw: {a} vs {b}"
            );
        }
    }
}

#[test]
fn direct_reads_give_the_packed_paths_bits() {
    // Geometries where micro-panels are whole output rows (Wo a multiple of 16), so the
    // kernels read the padded input in place: partial Cout panels (16, 20 = 6+6+6+2), depth
    // past one KC block (32 x 9 = 288), several images, a pointwise 4x4, and two that do not
    // qualify (Wo 8, stride 2) and must take the packed path unchanged.
    let cases = [
        ([2, 3, 32, 32], [16, 3, 3, 3], Conv2dParams::SAME3X3, true),
        ([3, 32, 16, 16], [20, 32, 3, 3], Conv2dParams::SAME3X3, true),
        ([1, 5, 16, 48], [7, 5, 3, 3], Conv2dParams::SAME3X3, true),
        (
            [4, 6, 4, 4],
            [5, 6, 1, 1],
            Conv2dParams { stride: 1, pad: 0 },
            true,
        ),
        ([2, 4, 8, 8], [6, 4, 3, 3], Conv2dParams::SAME3X3, false),
        (
            [1, 3, 32, 32],
            [4, 3, 3, 3],
            Conv2dParams { stride: 2, pad: 1 },
            false,
        ),
    ];
    for (i, (xs, ws, p, direct)) in cases.into_iter().enumerate() {
        let g = super::ConvGeom::new(&Shape::new(xs), &Shape::new(ws), p).unwrap();
        let x = random_vec(xs.iter().product(), 90 + i as u64);
        let w = random_vec(ws.iter().product(), 95 + i as u64);
        let a = super::cpu::forward_with(&g, &x, &w, None, true);
        let b = super::cpu::forward_with(&g, &x, &w, None, false);
        // and with the fused bias + ReLU
        let bias = random_vec(g.cout, 99 + i as u64);
        let fa = super::cpu::forward_with(&g, &x, &w, Some(&bias), true);
        let fb = super::cpu::forward_with(&g, &x, &w, Some(&bias), false);
        assert_eq!(fa, fb, "case {i}: fused, direct vs packed");
        assert_eq!(
            super::cpu::direct_applies(&g),
            direct,
            "case {i}: which path"
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "case {i}: direct vs packed");
        let want = naive(&x, xs, &w, ws, p);
        for (u, v) in a.iter().zip(&want) {
            assert!(
                (u - v).abs() <= 1e-5 * (1.0 + v.abs()),
                "case {i}: {u} vs {v}"
            );
        }
    }
}

#[test]
fn fused_bias_relu_equals_conv_then_identity_batchnorm() {
    let cpu = Cpu::new();
    // direct and packed paths, partial Cout panels, depth past one KC block, and a product
    // large enough to be cut over the threads (4 x 128 x 8 x 8 by 128 x 128 x 3 x 3)
    let cases = [
        ([2, 3, 32, 32], [16, 3, 3, 3]),
        ([3, 32, 16, 16], [20, 32, 3, 3]),
        ([2, 4, 8, 8], [7, 4, 3, 3]),
        ([4, 128, 8, 8], [128, 128, 3, 3]),
        ([1, 8, 2, 2], [5, 8, 3, 3]),
    ];
    for (i, (xs, ws)) in cases.into_iter().enumerate() {
        let p = Conv2dParams::SAME3X3;
        let x = random_tensor(&cpu, xs, 110 + i as u64);
        let w = random_tensor(&cpu, ws, 120 + i as u64);
        let c = ws[0];
        let bias = random_tensor(&cpu, [c], 130 + i as u64);
        let ones = cpu.from_host(Shape::new([c]), &vec![1.0; c]).unwrap();
        let zeros = cpu.from_host(Shape::new([c]), &vec![0.0; c]).unwrap();
        let none = cpu.from_host(Shape::new([0]), &[]).unwrap();
        let fused = cpu
            .conv2d_bias_relu_forward(&x, &w, &bias, &ones, &zeros, &none, p)
            .unwrap();
        let z = cpu.conv2d_forward(&x, &w, p).unwrap();
        let want = cpu
            .batchnorm_forward_eval(&z, &ones, &bias, &zeros, &ones, 0.0, true)
            .unwrap();
        assert_eq!(fused.shape, want.shape);
        assert_eq!(fused.storage, want.storage, "case {i}");
        // the ReLU did something: some outputs clipped, some not
        assert!(fused.storage.contains(&0.0) && fused.storage.iter().any(|&v| v > 0.0));
    }
    let x = random_tensor(&cpu, [1, 2, 4, 4], 1);
    let w = random_tensor(&cpu, [3, 2, 3, 3], 2);
    let bad = random_tensor(&cpu, [4], 3);
    let err = cpu
        .conv2d_bias_relu_forward(&x, &w, &bad, &bad, &bad, &bad, Conv2dParams::SAME3X3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias"), "{err}");
}

// ---- Winograd F(2x2, 3x3) (inference layers) -------------------------------------------

/// |winograd - reference| per output, against a bound from the f64 reference: the
/// transforms add and subtract up to 36 inputs and 9 weights before multiplying (scaling by
/// up to 8 and 1/24 for F(4x4, 3x3)), so the rounding error scales with sum |x| |w| over the
/// window, not with the result.
fn check_winograd(xs: [usize; 4], cout: usize, bias: bool, seed: u64) {
    use super::winograd::{self, Tile};
    let [n, cin, h, wd] = xs;
    let ws = [cout, cin, 3, 3];
    let p = Conv2dParams::SAME3X3;
    let x = random_vec(xs.iter().product(), seed);
    let w = random_vec(ws.iter().product(), seed + 1);
    let b = random_vec(cout, seed + 2);
    let reference = naive(&x, xs, &w, ws, p);
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
    let scale = naive(&abs(&x), xs, &abs(&w), ws, p);
    let g = super::ConvGeom::new(&Shape::new(xs), &Shape::new(ws), p).unwrap();
    assert!(winograd::applies(&g));
    for (tile, rel) in [(Tile::F2, 4e-6), (Tile::F4, 4e-5)] {
        let wt = winograd::Weights::new(&w, cout, cin, tile);
        // NaN first: an output left unwritten fails the comparison below
        let mut y = vec![f32::NAN; n * cout * h * wd];
        winograd::forward(&g, &x, &wt, bias.then_some(&b[..]), &mut y);
        let fresh = winograd::forward_new(&g, &x, &wt, bias.then_some(&b[..]));
        assert_eq!(fresh, y, "{tile:?} {xs:?}: forward_new");
        for (i, ((&got, &r), &s)) in y.iter().zip(&reference).zip(&scale).enumerate() {
            let co = i / (h * wd) % cout;
            let want = if bias { (r + b[co]).max(0.0) } else { r };
            let tol = rel * (s + 1.0);
            assert!(
                (got - want).abs() <= tol,
                "{tile:?} {xs:?} -> {cout}: output {i}: {got} vs {want} (tolerance {tol:e})"
            );
        }
    }
}

#[test]
fn winograd_matches_the_f64_reference() {
    // even maps (FractalNet's), odd ones and sides that are not multiples of 4 (partial tiles
    // at the right and bottom edges), a 1x1 map (one partial tile, all padding), Cout not a
    // multiple of the kernel's 6 rows, one input channel, and enough tiles for several chunks
    check_winograd([2, 3, 8, 8], 16, true, 1);
    check_winograd([1, 4, 5, 7], 7, false, 2);
    check_winograd([3, 2, 1, 1], 5, true, 3);
    check_winograd([1, 1, 6, 3], 1, false, 4);
    check_winograd([4, 32, 16, 16], 34, true, 5);
    check_winograd([2, 130, 2, 2], 13, false, 6);
    check_winograd([2, 8, 10, 6], 9, true, 7);
}

#[test]
fn winograd_hand_worked_tile() {
    // one 2x2 map, one channel, the kernel all ones: every output is the sum of the whole
    // (zero-padded) image, 1 + 2 + 3 + 4 = 10; then a centre-only kernel: the identity
    use super::winograd::{self, Tile};
    let g = super::ConvGeom::new(
        &Shape::new([1, 1, 2, 2]),
        &Shape::new([1, 1, 3, 3]),
        Conv2dParams::SAME3X3,
    )
    .unwrap();
    let x = [1.0, 2.0, 3.0, 4.0];
    let mut centre = [0.0f32; 9];
    centre[4] = 1.0;
    for tile in [Tile::F2, Tile::F4] {
        let close = |y: [f32; 4], want: [f32; 4]| {
            assert!(
                y.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-5),
                "{tile:?}: {y:?} vs {want:?}"
            )
        };
        let mut y = [0.0f32; 4];
        winograd::forward(
            &g,
            &x,
            &winograd::Weights::new(&[1.0; 9], 1, 1, tile),
            None,
            &mut y,
        );
        close(y, [10.0; 4]);
        let wt = winograd::Weights::new(&centre, 1, 1, tile);
        winograd::forward(&g, &x, &wt, Some(&[-2.5]), &mut y);
        close(y, [0.0, 0.0, 0.5, 1.5]);
    }
}

#[test]
fn winograd_is_independent_of_the_thread_count() {
    use super::winograd::{self, Tile};
    let xs = [6, 32, 8, 8];
    let g = super::ConvGeom::new(
        &Shape::new(xs),
        &Shape::new([40, 32, 3, 3]),
        Conv2dParams::SAME3X3,
    )
    .unwrap();
    let x = random_vec(xs.iter().product(), 7);
    let w = random_vec(40 * 32 * 9, 8);
    for tile in [Tile::F2, Tile::F4] {
        let wt = winograd::Weights::new(&w, 40, 32, tile);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut y = vec![0.0f32; 6 * 40 * 64];
            pool.install(|| winograd::forward(&g, &x, &wt, None, &mut y));
            y
        };
        let one = run(1);
        assert_eq!(one, run(3), "{tile:?}");
        assert!(one.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn prepared_folded_layer_uses_winograd_where_it_pays() {
    use super::winograd::{self, Tile};
    let cpu = Cpu::new();
    let p = Conv2dParams::SAME3X3;
    // (input, weight, the tile prepared for the map, whether it pays): 64 channels on 8x8
    // maps at batch 4 get F(4x4) and it pays; 8 channels (transforms too costly per
    // multiply-add) and a 2x2 map at batch 1 (F(2x2): one partial micro-panel either way) do
    // not, and give the direct kernel's exact bits; a 2x2 map at batch 8 gets F(2x2)
    for (i, (xs, ws, tile, pays)) in [
        ([4, 64, 8, 8], [64, 64, 3, 3], Tile::F4, true),
        ([2, 8, 8, 8], [8, 8, 3, 3], Tile::F4, false),
        ([1, 128, 2, 2], [128, 128, 3, 3], Tile::F2, false),
        ([8, 128, 2, 2], [128, 128, 3, 3], Tile::F2, true),
    ]
    .into_iter()
    .enumerate()
    {
        let g = super::ConvGeom::new(&Shape::new(xs), &Shape::new(ws), p).unwrap();
        assert_eq!(Tile::for_map([xs[2], xs[3]]), tile, "case {i}");
        assert_eq!(winograd::pays(&g, tile), pays, "case {i}");
        let x = random_tensor(&cpu, xs, 140 + i as u64);
        let w = random_tensor(&cpu, ws, 150 + i as u64);
        let c = ws[0];
        let bias = random_tensor(&cpu, [c], 160 + i as u64);
        let ones = cpu.from_host(Shape::new([c]), &vec![1.0; c]).unwrap();
        let zeros = cpu.from_host(Shape::new([c]), &vec![0.0; c]).unwrap();
        let none = cpu.from_host(Shape::new([0]), &[]).unwrap();
        let prepared = cpu
            .conv2d_bias_relu_prepare(&w, [xs[2], xs[3]])
            .unwrap()
            .unwrap();
        let run = |pr| {
            cpu.conv2d_bias_relu_forward(&x, &w, &bias, &ones, &zeros, pr, p)
                .unwrap()
        };
        let (direct, wino) = (run(&none), run(&prepared));
        if pays {
            assert_ne!(
                direct.storage, wino.storage,
                "case {i}: Winograd rounds differently"
            );
            let max = direct.storage.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in direct.storage.iter().zip(&wino.storage) {
                assert!((a - b).abs() <= 1e-5 * max, "case {i}: {a} vs {b}");
            }
        } else {
            assert_eq!(direct.storage, wino.storage, "case {i}");
        }
    }
    // a prepared tensor that belongs to another weight: one clear error
    let x = random_tensor(&cpu, [1, 32, 4, 4], 1);
    let w = random_tensor(&cpu, [32, 32, 3, 3], 2);
    let other = cpu
        .conv2d_bias_relu_prepare(&random_tensor(&cpu, [8, 32, 3, 3], 3), [4, 4])
        .unwrap()
        .unwrap();
    let c = random_tensor(&cpu, [32], 4);
    let err = cpu
        .conv2d_bias_relu_forward(&x, &w, &c, &c, &c, &other, p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prepared weights"), "{err}");
}
