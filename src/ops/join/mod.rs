//! Join: the element-wise mean of the active inputs (shared/SPEC.md): the inputs are summed in
//! the order given (ascending column) and the sum divided by their count. Its backward hands
//! every active input dy / count (`scale`).

pub mod cpu;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::tensor::Shape;

pub fn check(shapes: &[&Shape]) -> Result<()> {
    let Some(first) = shapes.first() else {
        return Err(Error::shape("join", "no active inputs"));
    };
    for s in &shapes[1..] {
        if s != first {
            return Err(Error::shape(
                "join",
                format!("inputs {first} and {s} differ"),
            ));
        }
    }
    Ok(())
}
