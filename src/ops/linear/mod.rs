//! Fully connected layer: y[N, K] = x[N, F] w[K, F]^T + b[K]. Backward: dx = dy w,
//! dw = dy^T x, db = column sums of dy.

pub mod cpu;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::tensor::Shape;

/// Returns [N, F, K].
pub fn check(x: &Shape, w: &Shape, b: &Shape) -> Result<[usize; 3]> {
    let [n, f] = x.matrix("linear")?;
    let [k, wf] = w.matrix("linear")?;
    if wf != f || b.dims() != [k] {
        return Err(Error::shape(
            "linear",
            format!("input {x}, weight {w}, bias {b}"),
        ));
    }
    Ok([n, f, k])
}
