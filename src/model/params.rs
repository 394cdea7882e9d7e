//! Parameters and buffers of a network, as one flat list of named tensors (names of
//! shared/SPEC.md). The optimiser, checkpoints and column extraction all walk this list.

use crate::backend::Backend;
use crate::error::Result;
use crate::rng::SeededRng;
use crate::tensor::{Shape, Tensor};

/// What a tensor is for: how it is initialised, whether SGD updates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Conv or FC weight: Xavier (Glorot) uniform with the given fans.
    Weight {
        fan_in: usize,
        fan_out: usize,
    },
    /// FC bias: zero.
    Bias,
    /// BN gamma: one.
    Gamma,
    /// BN beta: zero.
    Beta,
    /// Full-network running mean / var: zero / one.
    RunningMean,
    RunningVar,
    /// The layer's own column's statistics (precise BN): zero / one until calibrated.
    ColumnMean,
    ColumnVar,
    /// A constant operand of a unit's ops (all ones / all zeros), e.g. the identity
    /// BatchNorm that adds a folded unit's bias. Neither trained nor stored in files.
    Ones,
    Zeros,
    /// A backend's own arrangement of the conv weight before it (e.g. the CPU's Winograd
    /// transform), rebuilt from that weight whenever a network is loaded
    /// (`Network::prepare`); empty until then, and an empty one means the plain kernel.
    /// Neither trained nor stored.
    Prepared,
}

impl Role {
    pub fn trainable(&self) -> bool {
        matches!(
            self,
            Role::Weight { .. } | Role::Bias | Role::Gamma | Role::Beta
        )
    }
    /// Whether the tensor belongs in a model file (constants are rebuilt from the plan).
    pub fn stored(&self) -> bool {
        !matches!(self, Role::Ones | Role::Zeros | Role::Prepared)
    }
    /// The value every element starts at (weights: drawn instead, see `Params::init`).
    pub fn fill(&self) -> f32 {
        match self {
            Role::Gamma | Role::RunningVar | Role::ColumnVar | Role::Ones => 1.0,
            _ => 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Shape,
    pub role: Role,
}

pub struct Params<B: Backend> {
    pub specs: Vec<ParamSpec>,
    pub tensors: Vec<Tensor<B>>,
    /// Whether `ColumnMean`/`ColumnVar` hold calibrated statistics (and belong in a file).
    pub has_column_stats: bool,
}

impl<B: Backend> Clone for Params<B> {
    fn clone(&self) -> Self {
        Params {
            specs: self.specs.clone(),
            tensors: self.tensors.clone(),
            has_column_stats: self.has_column_stats,
        }
    }
}

impl<B: Backend> Params<B> {
    /// Initialises every tensor by its role; weights draw from `rng` in list order.
    pub fn init(backend: &B, specs: Vec<ParamSpec>, rng: &mut SeededRng) -> Result<Self> {
        let mut tensors = Vec::with_capacity(specs.len());
        for s in &specs {
            let n = s.shape.numel();
            let v: Vec<f32> = match s.role {
                Role::Weight { fan_in, fan_out } => {
                    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
                    (0..n)
                        .map(|_| ((rng.uniform_f64() * 2.0 - 1.0) * bound) as f32)
                        .collect()
                }
                r => vec![r.fill(); n],
            };
            tensors.push(backend.from_host(s.shape.clone(), &v)?);
        }
        Ok(Params {
            specs,
            tensors,
            has_column_stats: false,
        })
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// Number of trainable scalars (the paper's parameter count).
    pub fn trainable_count(&self) -> usize {
        self.specs
            .iter()
            .filter(|s| s.role.trainable())
            .map(|s| s.shape.numel())
            .sum()
    }

    /// Copies every tensor to another backend.
    pub fn to_backend<C: Backend>(&self, from: &B, to: &C) -> Result<Params<C>> {
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            tensors.push(to.from_host(t.shape.clone(), &from.to_host(t)?)?);
        }
        Ok(Params {
            specs: self.specs.clone(),
            tensors,
            has_column_stats: self.has_column_stats,
        })
    }
}
