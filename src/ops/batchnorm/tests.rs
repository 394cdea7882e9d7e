use super::{BatchStats, EPS};
use crate::backend::{Backend, Cpu};
use crate::gradcheck::{check_coords, check_grad, random_tensor, random_vec, weighted_sum};
use crate::tensor::Shape;

#[test]
fn hand_worked_train_forward_and_running_update() {
    let cpu = Cpu::new();
    // N=2, C=1, 1x2: values 1, 3, 5, 7 -> mean 4, biased var 5, unbiased 20/3.
    let x = cpu
        .from_host(Shape::new([2, 1, 1, 2]), &[1., 3., 5., 7.])
        .unwrap();
    let g = cpu.from_host(Shape::new([1]), &[2.0]).unwrap();
    let b = cpu.from_host(Shape::new([1]), &[0.5]).unwrap();
    let (y, st) = cpu.batchnorm_forward_train(&x, &g, &b, EPS, false).unwrap();
    assert_eq!(st.mean.storage, [4.0]);
    assert_eq!(st.var.storage, [5.0]);
    let s = 2.0 / (5.0f32 + EPS).sqrt();
    let want: Vec<f32> = [1., 3., 5., 7.]
        .iter()
        .map(|v| (v - 4.0) * s + 0.5)
        .collect();
    for (a, w) in y.storage.iter().zip(&want) {
        assert!((a - w).abs() < 1e-6, "{a} vs {w}");
    }
    // fused ReLU zeroes the negatives only
    let (yr, _) = cpu.batchnorm_forward_train(&x, &g, &b, EPS, true).unwrap();
    for (a, w) in yr.storage.iter().zip(&want) {
        assert_eq!(*a, w.max(0.0));
    }
    let mut rm = cpu.from_host(Shape::new([1]), &[0.0]).unwrap();
    let mut rv = cpu.from_host(Shape::new([1]), &[1.0]).unwrap();
    cpu.batchnorm_update_running(&mut rm, &mut rv, &st, 0.1, 4)
        .unwrap();
    assert!((rm.storage[0] - 0.4).abs() < 1e-7);
    assert!((rv.storage[0] - (0.9 + 0.1 * 20.0 / 3.0)).abs() < 1e-6);
}

#[test]
fn eval_uses_the_given_statistics() {
    let cpu = Cpu::new();
    let x = cpu
        .from_host(Shape::new([1, 2, 1, 1]), &[3.0, -1.0])
        .unwrap();
    let g = cpu.from_host(Shape::new([2]), &[1.0, 2.0]).unwrap();
    let b = cpu.from_host(Shape::new([2]), &[0.0, 1.0]).unwrap();
    let m = cpu.from_host(Shape::new([2]), &[1.0, 1.0]).unwrap();
    let v = cpu
        .from_host(Shape::new([2]), &[4.0 - EPS, 1.0 - EPS])
        .unwrap();
    let y = cpu
        .batchnorm_forward_eval(&x, &g, &b, &m, &v, EPS, false)
        .unwrap();
    assert!(
        (y.storage[0] - 1.0).abs() < 1e-6 && (y.storage[1] - (-3.0)).abs() < 1e-6,
        "{:?}",
        y.storage
    );
}

#[test]
fn backward_matches_finite_differences() {
    let cpu = Cpu::new();
    // The fused ReLU has a kink that central differences straddle; it is checked by
    // decomposition in `fused_relu_backward_is_bn_backward_of_the_masked_gradient`.
    {
        let relu = false;
        let x = random_tensor(&cpu, [4, 3, 5, 5], 5);
        let gamma = cpu.from_host(Shape::new([3]), &[1.5, -0.7, 0.9]).unwrap();
        let beta = cpu.from_host(Shape::new([3]), &[0.1, 0.3, -0.2]).unwrap();
        let fwd = |t: &crate::tensor::Tensor<Cpu>,
                   gm: &crate::tensor::Tensor<Cpu>,
                   bt: &crate::tensor::Tensor<Cpu>| {
            cpu.batchnorm_forward_train(t, gm, bt, EPS, relu)
        };
        check_grad(
            &cpu,
            &x,
            1e-2,
            2e-3,
            |t| Ok(fwd(t, &gamma, &beta)?.0),
            |t, dy| {
                let (y, st): (_, BatchStats<Cpu>) = fwd(t, &gamma, &beta)?;
                Ok(cpu.batchnorm_backward(t, &gamma, &st, &y, dy, EPS, relu)?.0)
            },
        );
        let (y, st) = fwd(&x, &gamma, &beta).unwrap();
        let r = random_vec(y.numel(), 0xD1CE);
        let rt = cpu.from_host(y.shape.clone(), &r).unwrap();
        let (_, dg, db) = cpu
            .batchnorm_backward(&x, &gamma, &st, &y, &rt, EPS, relu)
            .unwrap();
        check_coords(&gamma.storage, &dg.storage, 1e-3, 1e-3, "gamma", |gv| {
            let g2 = cpu.from_host(Shape::new([3]), gv).unwrap();
            weighted_sum(&fwd(&x, &g2, &beta).unwrap().0.storage, &r)
        });
        check_coords(&beta.storage, &db.storage, 1e-3, 1e-3, "beta", |bv| {
            let b2 = cpu.from_host(Shape::new([3]), bv).unwrap();
            weighted_sum(&fwd(&x, &gamma, &b2).unwrap().0.storage, &r)
        });
    }
}

#[test]
fn parameter_shape_mismatch_is_an_error() {
    let cpu = Cpu::new();
    let x = cpu.zeros(&Shape::new([2, 3, 2, 2])).unwrap();
    let g = cpu.zeros(&Shape::new([4])).unwrap();
    let e = cpu
        .batchnorm_forward_train(&x, &g, &g, EPS, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 channels") && e.contains("[4]"), "{e}");
}

#[test]
fn fused_relu_backward_is_bn_backward_of_the_masked_gradient() {
    let cpu = Cpu::new();
    let x = random_tensor(&cpu, [3, 2, 4, 4], 12);
    let gamma = cpu.from_host(Shape::new([2]), &[1.2, 0.8]).unwrap();
    let beta = cpu.from_host(Shape::new([2]), &[0.2, -0.1]).unwrap();
    let dy = random_tensor(&cpu, [3, 2, 4, 4], 13);
    let (yr, st) = cpu
        .batchnorm_forward_train(&x, &gamma, &beta, EPS, true)
        .unwrap();
    let (y, _) = cpu
        .batchnorm_forward_train(&x, &gamma, &beta, EPS, false)
        .unwrap();
    assert!(yr.storage.contains(&0.0) && yr.storage.iter().any(|&v| v > 0.0));
    let masked: Vec<f32> = dy
        .storage
        .iter()
        .zip(&y.storage)
        .map(|(&d, &v)| if v > 0.0 { d } else { 0.0 })
        .collect();
    let masked = cpu.from_host(dy.shape.clone(), &masked).unwrap();
    let fused = cpu
        .batchnorm_backward(&x, &gamma, &st, &yr, &dy, EPS, true)
        .unwrap();
    let plain = cpu
        .batchnorm_backward(&x, &gamma, &st, &y, &masked, EPS, false)
        .unwrap();
    assert_eq!(fused.0.storage, plain.0.storage);
    assert_eq!(fused.1.storage, plain.1.storage);
    assert_eq!(fused.2.storage, plain.2.storage);
}
