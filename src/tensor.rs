//! Tensors: a shape (kept apart from the bytes) plus backend-owned storage.
//!
//! Activations are NCHW f32, row-major. The storage type belongs to the backend
//! (`Vec<f32>` on the CPU, a device buffer on Vulkan); model code only sees `Tensor<B>`.

use crate::backend::Backend;
use crate::error::{Error, Result};
use std::fmt;

/// A row-major shape. Rank 1..=4 in practice (NCHW activations, OIHW weights, [N, F] features).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    pub fn dim(&self, i: usize) -> usize {
        self.0[i]
    }
    /// The four dimensions of an NCHW (or OIHW) shape; an error naming `op` otherwise.
    pub fn nchw(&self, op: &'static str) -> Result<[usize; 4]> {
        match self.0[..] {
            [n, c, h, w] => Ok([n, c, h, w]),
            _ => Err(Error::shape(
                op,
                format!("expected a rank-4 tensor, got {self}"),
            )),
        }
    }
    /// The two dimensions of a matrix shape.
    pub fn matrix(&self, op: &'static str) -> Result<[usize; 2]> {
        match self.0[..] {
            [r, c] => Ok([r, c]),
            _ => Err(Error::shape(
                op,
                format!("expected a rank-2 tensor, got {self}"),
            )),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}

/// A tensor on backend `B`.
pub struct Tensor<B: Backend> {
    pub shape: Shape,
    pub storage: B::Storage,
}

impl<B: Backend> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        Tensor {
            shape: self.shape.clone(),
            storage: self.storage.clone(),
        }
    }
}

impl<B: Backend> fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{}", self.shape)
    }
}

impl<B: Backend> Tensor<B> {
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    /// The same storage under another shape with the same element count (flatten, unflatten).
    pub fn reshape(self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != self.shape.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {} as {}", self.shape, shape),
            ));
        }
        Ok(Tensor {
            shape,
            storage: self.storage,
        })
    }
}

/// Checks that two shapes are equal, naming the op and both shapes when they are not.
pub fn same_shape(op: &'static str, a: &Shape, b: &Shape) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("{a} vs {b}")));
    }
    Ok(())
}
