//! The units placed inside the fractal. Each kind declares its tensors and runs forward and
//! backward through `Backend` ops; the plan and the executor only see `UnitKind`.
//!
//! To add a unit: a new `UnitKind` arm (src/plan), its `param_specs`, `forward` and
//! `backward` arms here. Nothing else changes.

use super::params::{ParamSpec, Params, Role};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::batchnorm::{self, BatchStats};
use crate::plan::{UnitKind, UnitNode};
use crate::rng::mix64;
use crate::tensor::{Shape, Tensor};

/// Which BatchNorm statistics a unit normalises with in evaluation, or updates in calibration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsSel {
    /// `bn.running_mean` / `bn.running_var`: the full network's.
    Running,
    /// `bn.column_mean` / `bn.column_var`: the unit's own column running alone.
    Column,
}

/// How the executor runs a forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Batch statistics, running statistics updated (momentum 0.1), dropout from `seed`,
    /// activations kept for the backward pass.
    Train { dropout_seed: u64 },
    /// Stored statistics, no dropout.
    Eval { stats: StatsSel },
    /// Precise BN: batch statistics, no dropout, frozen weights; the selected statistics take
    /// the cumulative average (momentum 1/(k+1) at batch k).
    Calibrate { stats: StatsSel, batch_index: usize },
}

/// Indices (into `Params`) of a unit's tensors.
#[derive(Clone, Debug)]
pub struct UnitParamIdx(pub Vec<usize>);

/// What a unit keeps from its training forward pass for its backward pass.
pub struct UnitCache<B: Backend> {
    /// BN input (conv output after dropout).
    bn_in: Tensor<B>,
    dropout_mask: Option<Tensor<B>>,
    stats: BatchStats<B>,
}

const CONV_W: usize = 0;
const GAMMA: usize = 1;
const BETA: usize = 2;
const RMEAN: usize = 3;
const RVAR: usize = 4;
const CMEAN: usize = 5;
const CVAR: usize = 6;
// ConvBiasRelu: conv.weight at CONV_W, then these.
const BIAS: usize = 1;
const ONES: usize = 2;
const ZEROS: usize = 3;

pub fn param_specs(u: &UnitNode) -> Vec<ParamSpec> {
    let p = u.prefix();
    match u.kind {
        UnitKind::ConvBnRelu => {
            let k = u.kind.kernel();
            let c = Shape::new([u.cout]);
            let spec = |n: &str, shape: Shape, role| ParamSpec { name: format!("{p}.{n}"), shape, role };
            vec![
                spec(
                    "conv.weight",
                    Shape::new([u.cout, u.cin, k, k]),
                    Role::Weight { fan_in: u.cin * k * k, fan_out: u.cout * k * k },
                ),
                spec("bn.gamma", c.clone(), Role::Gamma),
                spec("bn.beta", c.clone(), Role::Beta),
                spec("bn.running_mean", c.clone(), Role::RunningMean),
                spec("bn.running_var", c.clone(), Role::RunningVar),
                spec("bn.column_mean", c.clone(), Role::ColumnMean),
                spec("bn.column_var", c, Role::ColumnVar),
            ]
        }
        UnitKind::ConvBiasRelu => {
            let k = u.kind.kernel();
            let c = Shape::new([u.cout]);
            let spec = |n: &str, shape: Shape, role| ParamSpec { name: format!("{p}.{n}"), shape, role };
            vec![
                spec(
                    "conv.weight",
                    Shape::new([u.cout, u.cin, k, k]),
                    Role::Weight { fan_in: u.cin * k * k, fan_out: u.cout * k * k },
                ),
                spec("conv.bias", c.clone(), Role::Bias),
                // Not in files: the operands of the identity BatchNorm that adds the bias.
                spec("const.ones", c.clone(), Role::Ones),
                spec("const.zeros", c, Role::Zeros),
            ]
        }
    }
}

fn inference_only(u: &UnitNode) -> Error {
    Error::config(format!("{}: a folded network (BatchNorm folded into the convolutions) is for inference only", u.prefix()))
}

/// Forward through one unit. Returns the output and, in training mode, the cache.
pub fn forward<B: Backend>(
    b: &B,
    u: &UnitNode,
    idx: &UnitParamIdx,
    params: &mut Params<B>,
    x: &Tensor<B>,
    mode: Mode,
) -> Result<(Tensor<B>, Option<UnitCache<B>>)> {
    let t = |i: usize| idx.0[i];
    match u.kind {
        UnitKind::ConvBnRelu => {
            let z = b.conv2d_forward(x, &params.tensors[t(CONV_W)], u.kind.conv_params())?;
            match mode {
                Mode::Train { dropout_seed } => {
                    let (bn_in, dropout_mask) = if u.dropout > 0.0 {
                        let (y, m) = b.dropout_forward(&z, u.dropout, dropout_seed_of(dropout_seed, u))?;
                        (y, Some(m))
                    } else {
                        (z, None)
                    };
                    let (y, stats) = b.batchnorm_forward_train(
                        &bn_in,
                        &params.tensors[t(GAMMA)],
                        &params.tensors[t(BETA)],
                        batchnorm::EPS,
                        true,
                    )?;
                    let n = bn_in.shape.dim(0) * bn_in.shape.dim(2) * bn_in.shape.dim(3);
                    let (rm, rv) = two_mut(&mut params.tensors, t(RMEAN), t(RVAR));
                    b.batchnorm_update_running(rm, rv, &stats, batchnorm::MOMENTUM, n)?;
                    Ok((y, Some(UnitCache { bn_in, dropout_mask, stats })))
                }
                Mode::Eval { stats } => {
                    let (m, v) = match stats {
                        StatsSel::Running => (t(RMEAN), t(RVAR)),
                        StatsSel::Column => (t(CMEAN), t(CVAR)),
                    };
                    let p = &params.tensors;
                    let y = b.batchnorm_forward_eval(&z, &p[t(GAMMA)], &p[t(BETA)], &p[m], &p[v], batchnorm::EPS, true)?;
                    Ok((y, None))
                }
                Mode::Calibrate { stats, batch_index } => {
                    let (y, st) = b.batchnorm_forward_train(
                        &z,
                        &params.tensors[t(GAMMA)],
                        &params.tensors[t(BETA)],
                        batchnorm::EPS,
                        true,
                    )?;
                    let (m, v) = match stats {
                        StatsSel::Running => (t(RMEAN), t(RVAR)),
                        StatsSel::Column => (t(CMEAN), t(CVAR)),
                    };
                    let n = z.shape.dim(0) * z.shape.dim(2) * z.shape.dim(3);
                    let (rm, rv) = two_mut(&mut params.tensors, m, v);
                    b.batchnorm_update_running(rm, rv, &st, 1.0 / (batch_index as f32 + 1.0), n)?;
                    Ok((y, None))
                }
            }
        }
        UnitKind::ConvBiasRelu => {
            if !matches!(mode, Mode::Eval { .. }) {
                return Err(inference_only(u));
            }
            let z = b.conv2d_forward(x, &params.tensors[t(CONV_W)], u.kind.conv_params())?;
            // relu(z + bias) as a BatchNorm with gamma 1, mean 0, var 1 and eps 0: its scale
            // 1 / sqrt(1 + 0) is exactly 1 and its shift exactly the bias, so every backend
            // computes fma(z, 1, bias) = z + bias, correctly rounded. No extra op needed.
            let p = &params.tensors;
            let (ones, zeros) = (&p[t(ONES)], &p[t(ZEROS)]);
            let y = b.batchnorm_forward_eval(&z, ones, &p[t(BIAS)], zeros, ones, 0.0, true)?;
            Ok((y, None))
        }
    }
}

/// Backward through one unit: adds parameter gradients into `grads`, returns dx if asked.
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    b: &B,
    u: &UnitNode,
    idx: &UnitParamIdx,
    params: &Params<B>,
    x: &Tensor<B>,
    y: &Tensor<B>,
    cache: UnitCache<B>,
    dy: &Tensor<B>,
    need_dx: bool,
    grads: &mut [Option<Tensor<B>>],
) -> Result<Option<Tensor<B>>> {
    let t = |i: usize| idx.0[i];
    match u.kind {
        UnitKind::ConvBnRelu => {
            let (dbn, dgamma, dbeta) =
                b.batchnorm_backward(&cache.bn_in, &params.tensors[t(GAMMA)], &cache.stats, y, dy, batchnorm::EPS, true)?;
            let dz = match &cache.dropout_mask {
                Some(m) => b.mul(&dbn, m)?,
                None => dbn,
            };
            drop(cache);
            let (dx, dw) = b.conv2d_backward(x, &params.tensors[t(CONV_W)], &dz, u.kind.conv_params(), need_dx)?;
            grads[t(CONV_W)] = Some(dw);
            grads[t(GAMMA)] = Some(dgamma);
            grads[t(BETA)] = Some(dbeta);
            Ok(dx)
        }
        UnitKind::ConvBiasRelu => {
            Err(inference_only(u))
        }
    }
}

/// The dropout stream of one layer in one step: a function of the step's seed and the layer's
/// (block, column, layer), so every backend and every node order draws the same mask.
pub fn dropout_seed_of(step_seed: u64, u: &UnitNode) -> u64 {
    mix64(step_seed, ((u.block as u64) << 40) | ((u.column as u64) << 20) | u.layer as u64)
}

fn two_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert!(i < j, "two_mut expects i < j");
    let (a, b) = v.split_at_mut(j);
    (&mut a[i], &mut b[0])
}
