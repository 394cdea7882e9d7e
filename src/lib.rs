//! fractalnet: train, evaluate and deploy FractalNet image classifiers (Larsson, Maire,
//! Shakhnarovich, ICLR 2017) on CPUs and Vulkan GPUs.
//!
//! Map of the crate:
//! - [`tensor`]: shapes and backend-owned tensors;
//! - [`backend`]: the `Backend` trait (storage + op set) and its implementations;
//! - [`ops`]: one folder per op (semantics, CPU kernel, tests);
//! - [`plan`]: the fractal expansion rule as data, keep-masks, liveness, drop-path;
//! - [`model`]: parameters, initialisation and the executor that runs a plan under a mask;
//! - [`rng`]: every random choice, seeded.
//!
//! shared/SPEC.md is the contract for indexing, joins, pooling order, drop-path, BatchNorm,
//! the optimiser and checkpoint names.

pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod gradcheck;
pub mod model;
pub mod ops;
pub mod plan;
pub mod rng;
pub mod tensor;
pub mod train;

pub use backend::{Backend, Cpu};
pub use error::{Error, Result};
pub use tensor::{Shape, Tensor};
