//! Finite-difference gradient checks, shared by every op's tests and the network tests.
//!
//! The scalar under test is L(x) = sum_i f(x)_i r_i for a fixed random r, accumulated in f64.
//! The analytic gradient is the op's backward applied to dy = r; the numeric one is the central
//! difference (L(x + eps e_i) - L(x - eps e_i)) / (2 eps). Forward passes are f32, so the
//! tolerance is relative to the gradient's scale: |a - n| <= tol * (|n| + 0.1 max|n|).

use crate::backend::Backend;
use crate::error::Result;
use crate::rng::SeededRng;
use crate::tensor::{Shape, Tensor};

/// A tensor of uniform values in [-1, 1) from a seeded stream.
pub fn random_tensor<B: Backend>(b: &B, shape: impl Into<Shape>, seed: u64) -> Tensor<B> {
    let shape = shape.into();
    let v = random_vec(shape.numel(), seed);
    b.from_host(shape, &v).expect("random_tensor: backend allocation")
}

pub fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    (0..n).map(|_| rng.uniform_f32() * 2.0 - 1.0).collect()
}

/// sum(y * r) in f64.
pub fn weighted_sum(y: &[f32], r: &[f32]) -> f64 {
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// The worst normalised error seen, for reporting.
pub struct GradReport {
    pub checked: usize,
    pub worst: f64,
}

/// Compares `grad(x, r)` (the op's backward for dy = r) with central differences of
/// `forward`. Checks at most 64 coordinates, spread evenly. Panics with a description on
/// failure (it is a test helper).
pub fn check_grad<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    eps: f32,
    tol: f64,
    forward: impl Fn(&Tensor<B>) -> Result<Tensor<B>>,
    grad: impl Fn(&Tensor<B>, &Tensor<B>) -> Result<Tensor<B>>,
) -> GradReport {
    let y = forward(x).expect("forward");
    let r = random_vec(y.numel(), 0xD1CE);
    let rt = b.from_host(y.shape.clone(), &r).expect("upload");
    let analytic = b.to_host(&grad(x, &rt).expect("backward")).expect("download");
    assert_eq!(analytic.len(), x.numel(), "gradient has the input's size");
    let x0 = b.to_host(x).expect("download");
    let loss = |v: &[f32]| -> f64 {
        let t = b.from_host(x.shape.clone(), v).expect("upload");
        weighted_sum(&b.to_host(&forward(&t).expect("forward")).expect("download"), &r)
    };
    check_coords(&x0, &analytic, eps, tol, "input", loss)
}

/// Central differences of `loss` at `x0` against `analytic` on up to 64 coordinates.
pub fn check_coords(
    x0: &[f32],
    analytic: &[f32],
    eps: f32,
    tol: f64,
    what: &str,
    loss: impl Fn(&[f32]) -> f64,
) -> GradReport {
    let n = x0.len();
    let count = n.min(64);
    let idx: Vec<usize> = (0..count).map(|k| k * n / count).collect();
    let mut numeric = Vec::with_capacity(count);
    let mut v = x0.to_vec();
    for &i in &idx {
        v[i] = x0[i] + eps;
        let lp = loss(&v);
        v[i] = x0[i] - eps;
        let lm = loss(&v);
        v[i] = x0[i];
        numeric.push((lp - lm) / (2.0 * eps as f64));
    }
    let scale = numeric.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    let mut worst = 0.0f64;
    for (k, &i) in idx.iter().enumerate() {
        let a = analytic[i] as f64;
        let nv = numeric[k];
        let err = (a - nv).abs() / (nv.abs() + 0.1 * scale + 1e-12);
        worst = worst.max(err);
        assert!(
            (a - nv).abs() <= tol * (nv.abs() + 0.1 * scale) + 1e-9,
            "{what}[{i}]: analytic {a:.6e} vs numeric {nv:.6e} (scale {scale:.3e})"
        );
    }
    GradReport {
        checked: count,
        worst,
    }
}
