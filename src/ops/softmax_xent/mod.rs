//! Softmax cross-entropy, mean over the batch: loss = (1/N) sum_n (logsumexp(z_n) - z_n[y_n]);
//! dlogits = (softmax(z) - onehot(y)) / N. Labels are class indices stored as f32 [N]; one
//! that is not an integer in 0..K is an error. Also argmax (first maximum) for accuracy.

pub mod cpu;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::tensor::Shape;

/// Returns [N, K].
pub fn check(logits: &Shape, labels: &Shape) -> Result<[usize; 2]> {
    let [n, k] = logits.matrix("softmax_xent")?;
    if labels.dims() != [n] {
        return Err(Error::shape(
            "softmax_xent",
            format!("logits {logits} but labels {labels}"),
        ));
    }
    if n == 0 || k == 0 {
        return Err(Error::shape(
            "softmax_xent",
            format!("empty logits {logits}"),
        ));
    }
    Ok([n, k])
}

pub fn check_labels(labels: &[f32], k: usize) -> Result<()> {
    for (i, &l) in labels.iter().enumerate() {
        if !(l >= 0.0 && (l as usize) < k && l.fract() == 0.0) {
            return Err(Error::shape(
                "softmax_xent",
                format!("label {l} of sample {i} is not a class in 0..{k}"),
            ));
        }
    }
    Ok(())
}
