use super::Pool2dParams;
use crate::backend::{Backend, Cpu};
use crate::gradcheck::{check_grad, random_vec};
use crate::tensor::Shape;

#[test]
fn hand_worked_max_and_backward_routing() {
    let cpu = Cpu::new();
    #[rustfmt::skip]
    let x = cpu.from_host(Shape::new([1, 1, 4, 4]), &[
        1., 2., 5., 5.,
        3., 4., 0., 1.,
        9., 0., 2., 2.,
        0., 0., 2., 7.,
    ]).unwrap();
    let y = cpu.maxpool2d_forward(&x, Pool2dParams::HALVE).unwrap();
    assert_eq!(y.shape.dims(), [1, 1, 2, 2]);
    assert_eq!(y.storage, [4., 5., 9., 7.]);
    let dy = cpu
        .from_host(Shape::new([1, 1, 2, 2]), &[1., 2., 3., 4.])
        .unwrap();
    let dx = cpu
        .maxpool2d_backward(&x, &dy, Pool2dParams::HALVE)
        .unwrap();
    // the tie 5,5 goes to the first in row-major order
    #[rustfmt::skip]
    assert_eq!(dx.storage, [
        0., 0., 2., 0.,
        0., 1., 0., 0.,
        3., 0., 0., 0.,
        0., 0., 0., 4.,
    ]);
}

#[test]
fn odd_sizes_floor_and_general_windows() {
    let cpu = Cpu::new();
    let x = cpu
        .from_host(
            Shape::new([1, 1, 5, 5]),
            &(0..25).map(|v| v as f32).collect::<Vec<_>>(),
        )
        .unwrap();
    let y = cpu.maxpool2d_forward(&x, Pool2dParams::HALVE).unwrap();
    assert_eq!(y.storage, [6., 8., 16., 18.]);
    let y3 = cpu
        .maxpool2d_forward(
            &x,
            Pool2dParams {
                kernel: 3,
                stride: 2,
                pad: 0,
            },
        )
        .unwrap();
    assert_eq!(y3.storage, [12., 14., 22., 24.]);
}

#[test]
fn backward_matches_finite_differences() {
    let cpu = Cpu::new();
    // distinct values spaced well apart so no window changes its argmax under +-eps
    let n = 2 * 3 * 6 * 6;
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.05).collect();
    let mut rng = crate::rng::SeededRng::new(3);
    rng.shuffle(&mut v);
    let x = cpu.from_host(Shape::new([2, 3, 6, 6]), &v).unwrap();
    for p in [
        Pool2dParams::HALVE,
        Pool2dParams {
            kernel: 3,
            stride: 1,
            pad: 0,
        },
        Pool2dParams::STEM,
        Pool2dParams {
            kernel: 3,
            stride: 1,
            pad: 1,
        },
    ] {
        check_grad(
            &cpu,
            &x,
            1e-2,
            1e-3,
            |t| cpu.maxpool2d_forward(t, p),
            |t, dy| cpu.maxpool2d_backward(t, dy, p),
        );
    }
}

#[test]
fn padding_never_wins_and_matches_resnet_stem_sizes() {
    let cpu = Cpu::new();
    // all-negative input: a zero pad would win every border window; -inf padding never does
    let v: Vec<f32> = (0..25).map(|i| -1.0 - i as f32).collect();
    let x = cpu.from_host(Shape::new([1, 1, 5, 5]), &v).unwrap();
    let y = cpu.maxpool2d_forward(&x, Pool2dParams::STEM).unwrap();
    // Ho = (5 + 2 - 3) / 2 + 1 = 3; window (oy, ox) covers rows 2oy-1..=2oy+1
    assert_eq!(y.shape.dims(), [1, 1, 3, 3]);
    assert_eq!(y.storage, [-1., -2., -4., -6., -7., -9., -16., -17., -19.]);
    let dy = cpu.from_host(Shape::new([1, 1, 3, 3]), &[1.; 9]).unwrap();
    let dx = cpu.maxpool2d_backward(&x, &dy, Pool2dParams::STEM).unwrap();
    let mut want = vec![0.0f32; 25];
    for i in [0, 1, 3, 5, 6, 8, 15, 16, 18] {
        want[i] = 1.0;
    }
    assert_eq!(dx.storage, want);
    // ResNet: 112 -> 56, and any size: ceil(H / 2)
    for (h, ho) in [(112, 56), (7, 4), (1, 1), (2, 1), (16, 8)] {
        assert_eq!(Pool2dParams::STEM.out_len(h), Some(ho), "H = {h}");
    }
    let x = cpu.zeros(&Shape::new([1, 1, 4, 4])).unwrap();
    let e = cpu
        .maxpool2d_forward(
            &x,
            Pool2dParams {
                kernel: 2,
                stride: 1,
                pad: 2,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("half"), "{e}");
}

#[test]
fn global_average_pool_values_and_gradient() {
    let cpu = Cpu::new();
    let x = cpu
        .from_host(
            Shape::new([1, 2, 2, 2]),
            &[1., 2., 3., 4., -1., -1., 5., 1.],
        )
        .unwrap();
    let y = cpu.global_avgpool_forward(&x).unwrap();
    assert_eq!(y.shape.dims(), [1, 2, 1, 1]);
    assert_eq!(y.storage, [2.5, 1.0]);
    let xr = cpu
        .from_host(Shape::new([2, 3, 4, 5]), &random_vec(120, 8))
        .unwrap();
    let shape = xr.shape.clone();
    check_grad(
        &cpu,
        &xr,
        1e-2,
        1e-3,
        |t| cpu.global_avgpool_forward(t),
        |_, dy| cpu.global_avgpool_backward(dy, &shape),
    );
}

#[test]
fn too_small_input_is_an_error() {
    let cpu = Cpu::new();
    let x = cpu.zeros(&Shape::new([1, 1, 1, 4])).unwrap();
    let e = cpu
        .maxpool2d_forward(&x, Pool2dParams::HALVE)
        .unwrap_err()
        .to_string();
    assert!(e.contains("smaller"), "{e}");
}

/// The 2x2 stride-2 kernel is a specialisation: it must agree bit for bit with the generic
/// window loop, ties (first maximum wins), NaNs, signed zeros and odd sizes included.
#[test]
fn specialised_2x2_matches_the_generic_kernel_bit_for_bit() {
    use super::cpu::{max_backward, max_backward_generic, max_forward, max_forward_generic};
    let mut rng = crate::rng::SeededRng::new(11);
    for &(n, c, h, w) in &[
        (2, 3, 8, 8),
        (1, 2, 5, 7),
        (3, 1, 2, 2),
        (4, 130, 4, 4),
        (2, 5, 9, 6),
        (2, 2, 6, 21),
    ] {
        // few distinct values: many ties; some NaNs, infinities and signed zeros
        let pick = [
            0.0,
            -0.0,
            1.0,
            1.0,
            2.0,
            -1.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.5,
        ];
        let x: Vec<f32> = (0..n * c * h * w)
            .map(|_| pick[(rng.uniform_f32() * pick.len() as f32) as usize % pick.len()])
            .collect();
        let o = [(h - 2) / 2 + 1, (w - 2) / 2 + 1];
        let dy: Vec<f32> = (0..n * c * o[0] * o[1])
            .map(|i| {
                if i % 7 == 0 {
                    -0.0
                } else {
                    rng.uniform_f32() - 0.5
                }
            })
            .collect();
        let d = [n, c, h, w];
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(
            bits(max_forward(&x, d, o, Pool2dParams::HALVE)),
            bits(max_forward_generic(&x, d, o, Pool2dParams::HALVE)),
            "forward {d:?}"
        );
        assert_eq!(
            bits(max_backward(&x, &dy, d, o, Pool2dParams::HALVE)),
            bits(max_backward_generic(&x, &dy, d, o, Pool2dParams::HALVE)),
            "backward {d:?}"
        );
    }
}

#[test]
fn nan_windows_skip_nans_unless_all_nan() {
    let cpu = Cpu::new();
    let nan = f32::NAN;
    #[rustfmt::skip]
    let x = cpu.from_host(Shape::new([1, 1, 2, 6]), &[
        nan, 1., nan, nan, 3., nan,
        2.,  2., nan, nan, nan, 3.,
    ]).unwrap();
    let y = cpu.maxpool2d_forward(&x, Pool2dParams::HALVE).unwrap();
    assert_eq!(y.storage[0], 2.);
    assert!(y.storage[1].is_nan());
    assert_eq!(y.storage[2], 3.);
    let dy = cpu
        .from_host(Shape::new([1, 1, 1, 3]), &[1., 2., 3.])
        .unwrap();
    let dx = cpu
        .maxpool2d_backward(&x, &dy, Pool2dParams::HALVE)
        .unwrap();
    assert_eq!(dx.storage, [0., 0., 2., 0., 3., 0., 1., 0., 0., 0., 0., 0.]);
}
