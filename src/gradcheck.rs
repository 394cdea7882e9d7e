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
    b.from_host(shape, &v)
        .expect("random_tensor: backend allocation")
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
    let analytic = b
        .to_host(&grad(x, &rt).expect("backward"))
        .expect("download");
    assert_eq!(analytic.len(), x.numel(), "gradient has the input's size");
    let x0 = b.to_host(x).expect("download");
    let loss = |v: &[f32]| -> f64 {
        let t = b.from_host(x.shape.clone(), v).expect("upload");
        weighted_sum(
            &b.to_host(&forward(&t).expect("forward")).expect("download"),
            &r,
        )
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
    loss: impl FnMut(&[f32]) -> f64,
) -> GradReport {
    check_coords_n(x0, analytic, eps, tol, 0.1, what, 64, loss)
}

/// As `check_coords`, on at most `max` coordinates spread evenly, with the error bound
/// |a - n| <= tol * (|n| + floor * max|n|).
///
/// Kinks: ReLU and max-pool make a network only piecewise smooth, and a difference quotient
/// that straddles a kink measures neither side. Each coordinate is therefore differenced at
/// eps and eps/2; where the two disagree by more than the tolerance the coordinate sits at a
/// kink and is skipped (at most a quarter of them may be, else the check fails). Elsewhere
/// the two are combined by Richardson extrapolation, (4 n(eps/2) - n(eps)) / 3, which cancels
/// the O(eps^2) error of the central difference.
#[allow(clippy::too_many_arguments)]
pub fn check_coords_n(
    x0: &[f32],
    analytic: &[f32],
    eps: f32,
    tol: f64,
    floor: f64,
    what: &str,
    max: usize,
    mut loss: impl FnMut(&[f32]) -> f64,
) -> GradReport {
    let n = x0.len();
    let count = n.min(max);
    let idx: Vec<usize> = (0..count).map(|k| k * n / count).collect();
    let mut v = x0.to_vec();
    let mut diff = |i: usize, e: f32, v: &mut Vec<f32>| {
        v[i] = x0[i] + e;
        let lp = loss(v);
        v[i] = x0[i] - e;
        let lm = loss(v);
        v[i] = x0[i];
        // the step actually taken in f32
        let h = (x0[i] + e) as f64 - (x0[i] - e) as f64;
        (lp - lm) / h
    };
    let pairs: Vec<(f64, f64)> = idx
        .iter()
        .map(|&i| (diff(i, eps, &mut v), diff(i, eps / 2.0, &mut v)))
        .collect();
    let scale = pairs.iter().fold(0.0f64, |m, p| m.max(p.1.abs()));
    let bound = |nv: f64| tol * (nv.abs() + floor * scale) + 1e-9;
    let mut worst = 0.0f64;
    let mut skipped = 0;
    for (k, &i) in idx.iter().enumerate() {
        let (n1, n2) = pairs[k];
        if (n1 - n2).abs() > bound(n2) {
            skipped += 1;
            continue;
        }
        let nv = (4.0 * n2 - n1) / 3.0;
        let a = analytic[i] as f64;
        let err = (a - nv).abs() / (nv.abs() + floor * scale + 1e-12);
        worst = worst.max(err);
        assert!(
            (a - nv).abs() <= bound(nv),
            "{what}[{i}]: analytic {a:.6e} vs numeric {nv:.6e} (scale {scale:.3e})"
        );
    }
    assert!(
        skipped * 4 <= count,
        "{what}: {skipped} of {count} coordinates sit at kinks; the check says nothing"
    );
    GradReport {
        checked: count - skipped,
        worst,
    }
}
