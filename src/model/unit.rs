//! The units placed inside the fractal. Each kind declares its tensors and runs forward and
//! backward through `Backend` ops; the plan and the executor only see `UnitKind`.
//!
//! A unit is a chain of conv -> (dropout) -> BN -> ReLU stages (`UnitNode::stages`, from its
//! `UnitOp`): the plain layer, the stem and a projection have one, the bottleneck three.
//! Each stage owns seven tensors, `conv{tag}.weight` and `bn{tag}.*`; forward and backward
//! run the stages through `Backend` ops. To add a unit: see README, "Adding a unit".

use super::params::{ParamSpec, Params, Role};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::batchnorm::{self, BatchStats};
use crate::ops::conv2d::Conv2dParams;
use crate::plan::{UnitNode, UnitOp};
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

/// What one conv -> BN -> ReLU stage keeps from its training forward pass.
struct StageCache<B: Backend> {
    /// BN input (conv output after dropout).
    bn_in: Tensor<B>,
    dropout_mask: Option<Tensor<B>>,
    stats: BatchStats<B>,
}

/// What a unit keeps from its training forward pass for its backward pass.
pub struct UnitCache<B: Backend> {
    stages: Vec<StageCache<B>>,
    /// Outputs of every stage but the last (the executor keeps the unit's input and output).
    inner: Vec<Tensor<B>>,
}

// Per stage, its tensors in this order (shared/SPEC.md's order for the plain layer).
const PER_STAGE: usize = 7;
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
const PREPARED: usize = 4;

/// A unit's tensors: per stage `{prefix}.conv{tag}.weight` and `{prefix}.bn{tag}.*`.
pub fn param_specs(u: &UnitNode) -> Vec<ParamSpec> {
    let p = u.prefix();
    if u.kind == UnitOp::ConvBiasRelu {
        let c = Shape::new([u.cout]);
        let spec = |n: &str, shape: Shape, role| ParamSpec {
            name: format!("{p}.{n}"),
            shape,
            role,
        };
        return vec![
            spec(
                "conv.weight",
                Shape::new([u.cout, u.cin, 3, 3]),
                Role::Weight {
                    fan_in: u.cin * 9,
                    fan_out: u.cout * 9,
                },
            ),
            spec("conv.bias", c.clone(), Role::Bias),
            // Not in files: the operands of the identity BatchNorm that adds the bias.
            spec("const.ones", c.clone(), Role::Ones),
            spec("const.zeros", c, Role::Zeros),
            spec("const.prepared", Shape::new([0]), Role::Prepared),
        ];
    }
    let mut specs = Vec::new();
    for st in u.stages() {
        let (k, tag) = (st.kernel, st.tag);
        let c = Shape::new([st.cout]);
        let bn = |n: &str, role| ParamSpec {
            name: format!("{p}.bn{tag}.{n}"),
            shape: c.clone(),
            role,
        };
        specs.extend([
            ParamSpec {
                name: format!("{p}.conv{tag}.weight"),
                shape: Shape::new([st.cout, st.cin, k, k]),
                role: Role::Weight {
                    fan_in: st.cin * k * k,
                    fan_out: st.cout * k * k,
                },
            },
            bn("gamma", Role::Gamma),
            bn("beta", Role::Beta),
            bn("running_mean", Role::RunningMean),
            bn("running_var", Role::RunningVar),
            bn("column_mean", Role::ColumnMean),
            bn("column_var", Role::ColumnVar),
        ]);
    }
    specs
}

fn inference_only(u: &UnitNode) -> Error {
    Error::config(format!(
        "{}: a folded network (BatchNorm folded into the convolutions) is for inference only",
        u.prefix()
    ))
}

/// Rebuilds a folded unit's `Role::Prepared` tensor from its weight with the backend's
/// `conv2d_bias_relu_prepare` (empty where the backend has no faster kernel for it). Other
/// units have nothing to prepare.
pub fn prepare<B: Backend>(
    b: &B,
    u: &UnitNode,
    idx: &UnitParamIdx,
    params: &mut Params<B>,
) -> Result<()> {
    if u.kind != UnitOp::ConvBiasRelu {
        return Ok(());
    }
    let (w, slot) = (idx.0[CONV_W], idx.0[PREPARED]);
    let prepared = match b.conv2d_bias_relu_prepare(&params.tensors[w], u.hw)? {
        Some(t) => t,
        None => b.from_host(Shape::new([0]), &[])?,
    };
    params.tensors[slot] = prepared;
    Ok(())
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
    if u.kind == UnitOp::ConvBiasRelu {
        if !matches!(mode, Mode::Eval { .. }) {
            return Err(inference_only(u));
        }
        let t = |i: usize| idx.0[i];
        let p = &params.tensors;
        let (w, bias) = (&p[t(CONV_W)], &p[t(BIAS)]);
        let (ones, zeros) = (&p[t(ONES)], &p[t(ZEROS)]);
        let prepared = &p[t(PREPARED)];
        let y =
            b.conv2d_bias_relu_forward(x, w, bias, ones, zeros, prepared, Conv2dParams::SAME3X3)?;
        return Ok((y, None));
    }
    let stages = u.stages();
    let mut cache = UnitCache {
        stages: Vec::with_capacity(stages.len()),
        inner: Vec::new(),
    };
    let mut cur: Option<Tensor<B>> = None;
    for (i, st) in stages.iter().enumerate() {
        let t = |k: usize| idx.0[i * PER_STAGE + k];
        let input = cur.as_ref().unwrap_or(x);
        let z = b.conv2d_forward(input, &params.tensors[t(CONV_W)], st.conv)?;
        let y = match mode {
            Mode::Train { dropout_seed } => {
                let (bn_in, dropout_mask) = if st.dropout > 0.0 {
                    let (y, m) =
                        b.dropout_forward(&z, st.dropout, dropout_seed_of(dropout_seed, u))?;
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
                cache.stages.push(StageCache {
                    bn_in,
                    dropout_mask,
                    stats,
                });
                y
            }
            Mode::Eval { stats } => {
                let (m, v) = match stats {
                    StatsSel::Running => (t(RMEAN), t(RVAR)),
                    StatsSel::Column => (t(CMEAN), t(CVAR)),
                };
                let p = &params.tensors;
                b.batchnorm_forward_eval(
                    &z,
                    &p[t(GAMMA)],
                    &p[t(BETA)],
                    &p[m],
                    &p[v],
                    batchnorm::EPS,
                    true,
                )?
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
                y
            }
        };
        if let (Some(prev), true) = (cur.take(), matches!(mode, Mode::Train { .. })) {
            cache.inner.push(prev);
        }
        cur = Some(y);
    }
    let y = cur.ok_or_else(|| {
        crate::error::Error::config(format!("internal: unit {} has no stage", u.prefix()))
    })?;
    Ok((y, matches!(mode, Mode::Train { .. }).then_some(cache)))
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
    if u.kind == UnitOp::ConvBiasRelu {
        return Err(inference_only(u));
    }
    let stages = u.stages();
    let UnitCache {
        stages: mut caches,
        inner,
    } = cache;
    let mut inner_g: Option<Tensor<B>> = None;
    for i in (0..stages.len()).rev() {
        let g = inner_g.as_ref().unwrap_or(dy);
        let t = |k: usize| idx.0[i * PER_STAGE + k];
        let sc = caches.pop().ok_or_else(|| {
            crate::error::Error::config(format!("internal: cache of {} missing", u.prefix()))
        })?;
        let (input, output) = (
            if i == 0 { x } else { &inner[i - 1] },
            if i + 1 == stages.len() { y } else { &inner[i] },
        );
        let (dbn, dgamma, dbeta) = b.batchnorm_backward(
            &sc.bn_in,
            &params.tensors[t(GAMMA)],
            &sc.stats,
            output,
            g,
            batchnorm::EPS,
            true,
        )?;
        let dz = match &sc.dropout_mask {
            Some(m) => b.mul(&dbn, m)?,
            None => dbn,
        };
        drop(sc);
        let (dx, dw) = b.conv2d_backward(
            input,
            &params.tensors[t(CONV_W)],
            &dz,
            stages[i].conv,
            need_dx || i > 0,
        )?;
        grads[t(CONV_W)] = Some(dw);
        grads[t(GAMMA)] = Some(dgamma);
        grads[t(BETA)] = Some(dbeta);
        match dx {
            Some(dx) if i > 0 => inner_g = Some(dx),
            dx => return Ok(dx),
        }
    }
    Ok(None)
}

/// The dropout stream of one layer in one step: a function of the step's seed and the layer's
/// (block, column, layer), so every backend and every node order draws the same mask.
pub fn dropout_seed_of(step_seed: u64, u: &UnitNode) -> u64 {
    mix64(
        step_seed,
        ((u.block as u64) << 40) | ((u.column as u64) << 20) | u.layer as u64,
    )
}

fn two_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert!(i < j, "two_mut expects i < j");
    let (a, b) = v.split_at_mut(j);
    (&mut a[i], &mut b[0])
}
