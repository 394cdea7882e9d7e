//! Deployment: one column cut out of a trained network, and BatchNorm folded into the
//! convolutions.
//!
//! Column c evaluated alone is the plan under the global mask of column c (shared/SPEC.md),
//! so a file with only that column's tensors and the classifier computes exactly the same
//! logits: every other layer is dead under that mask. With precise BN the column's own
//! statistics (`bn.column_mean` / `bn.column_var`) are the ones column c is evaluated with;
//! the extracted file stores them AS its running statistics and holds no `column_*` pair.
//!
//! Folding (`fold_bn`) turns each conv -> BN(eval) -> ReLU unit into conv + bias -> ReLU
//! (`UnitKind::ConvBiasRelu`) with, per output channel o and s = gamma / sqrt(var + eps):
//!
//! ```text
//! block{b}.col{c}.layer{l}.conv.weight  [Cout, Cin, 3, 3]  w'[o] = w[o] * s[o]
//! block{b}.col{c}.layer{l}.conv.bias    [Cout]             b'[o] = beta[o] - mean[o] * s[o]
//! ```
//!
//! using the running statistics (an extracted column's are its own), computed in f64 and
//! rounded once. The metadata says `"unit": "conv_bias_relu"` and `"folded_bn": true`; such
//! a file is for inference only.

use super::io::ModelMeta;
use super::params::{ParamSpec, Params, Role};
use super::{Network, param_specs, unit};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::batchnorm;
use crate::plan::{KeepMask, Plan, UnitKind};
use std::collections::HashSet;

/// The tensors and metadata of a deployable file (write them with `io::save_tensors`).
pub struct Extracted<B: Backend> {
    /// Exactly the tensors the file holds, in `param_specs` order.
    pub params: Params<B>,
    pub meta: ModelMeta,
}

/// Trainable parameters the network uses when run as `column` alone (`None`: the full
/// network): that column's units and the classifier.
pub fn used_params(plan: &Plan, column: Option<usize>) -> usize {
    let units: usize = plan
        .units
        .iter()
        .filter(|u| column.is_none_or(|c| u.column == c))
        .flat_map(unit::param_specs)
        .filter(|s| s.role.trainable())
        .map(|s| s.shape.numel())
        .sum();
    units + plan.features * plan.config.classes + plan.config.classes
}

/// Column `column` of `net` alone: its units' tensors and `fc.*`, with the column's
/// calibrated statistics (when the network has them) as the running statistics.
pub fn extract_column<B: Backend>(
    net: &Network<B>,
    meta: &ModelMeta,
    column: usize,
) -> Result<Extracted<B>> {
    if let Some(c) = meta.column {
        return Err(Error::config(format!(
            "the model already holds only column {c} (an extracted file); extract from the full model"
        )));
    }
    if meta.folded_bn {
        return Err(Error::config(
            "the model's BatchNorm is folded; extract from the unfolded full model",
        ));
    }
    let cfg = net.config();
    KeepMask::column(cfg, column)?; // the range check, with the usual message
    let keep: HashSet<String> = net
        .plan
        .units
        .iter()
        .filter(|u| u.column == column)
        .flat_map(unit::param_specs)
        .map(|s| s.name)
        .chain(["fc.weight".to_string(), "fc.bias".to_string()])
        .collect();
    let p = &net.params;
    let (mut specs, mut tensors) = (Vec::new(), Vec::new());
    for (i, s) in p.specs.iter().enumerate() {
        if !keep.contains(&s.name)
            || !s.role.stored()
            || matches!(s.role, Role::ColumnMean | Role::ColumnVar)
        {
            continue;
        }
        let source = match (s.role, p.has_column_stats) {
            (Role::RunningMean, true) => {
                column_twin(p, &s.name, "bn.running_mean", "bn.column_mean")?
            }
            (Role::RunningVar, true) => column_twin(p, &s.name, "bn.running_var", "bn.column_var")?,
            _ => i,
        };
        specs.push(s.clone());
        tensors.push(p.tensors[source].clone());
    }
    let meta = ModelMeta {
        column: Some(column),
        ..meta.clone()
    };
    Ok(Extracted {
        params: Params {
            specs,
            tensors,
            has_column_stats: false,
        },
        meta,
    })
}

/// Index of the column statistic that pairs with the running statistic `name`.
fn column_twin<B: Backend>(p: &Params<B>, name: &str, running: &str, col: &str) -> Result<usize> {
    let twin = name.replace(running, col);
    p.index(&twin)
        .ok_or_else(|| Error::config(format!("internal: {name} has no {twin}")))
}

/// BatchNorm folded into the convolution of every unit present in `params` (a full network
/// or an extracted column), with the running statistics. See the module documentation.
pub fn fold_bn<B: Backend>(b: &B, params: &Params<B>, meta: &ModelMeta) -> Result<Extracted<B>> {
    if meta.folded_bn || meta.config.unit != UnitKind::ConvBnRelu {
        return Err(Error::config("the model's BatchNorm is already folded"));
    }
    let mut cfg = meta.config.clone();
    cfg.unit = UnitKind::ConvBiasRelu;
    let folded_plan = Plan::new(&cfg)?;
    let host = |name: &str| -> Result<Vec<f32>> {
        let i = params
            .index(name)
            .ok_or_else(|| Error::config(format!("internal: {name} missing")))?;
        b.to_host(&params.tensors[i])
    };
    let (mut specs, mut tensors) = (Vec::<ParamSpec>::new(), Vec::new());
    for u in &folded_plan.units {
        let p = u.prefix();
        if params.index(&format!("{p}.conv.weight")).is_none() {
            continue; // not in this file (another column)
        }
        let w = host(&format!("{p}.conv.weight"))?;
        let (gamma, beta) = (
            host(&format!("{p}.bn.gamma"))?,
            host(&format!("{p}.bn.beta"))?,
        );
        let (mean, var) = (
            host(&format!("{p}.bn.running_mean"))?,
            host(&format!("{p}.bn.running_var"))?,
        );
        let per_out = w.len() / u.cout;
        let mut wf = vec![0f32; w.len()];
        let mut bias = vec![0f32; u.cout];
        for o in 0..u.cout {
            let s = gamma[o] as f64 / (var[o] as f64 + batchnorm::EPS as f64).sqrt();
            for (dst, src) in wf[o * per_out..(o + 1) * per_out]
                .iter_mut()
                .zip(&w[o * per_out..(o + 1) * per_out])
            {
                *dst = (*src as f64 * s) as f32;
            }
            bias[o] = (beta[o] as f64 - mean[o] as f64 * s) as f32;
        }
        for s in unit::param_specs(u).into_iter().filter(|s| s.role.stored()) {
            let v = if s.role == Role::Bias { &bias } else { &wf };
            tensors.push(b.from_host(s.shape.clone(), v)?);
            specs.push(s);
        }
    }
    for s in param_specs(&folded_plan)
        .into_iter()
        .filter(|s| s.name.starts_with("fc."))
    {
        let i = params
            .index(&s.name)
            .ok_or_else(|| Error::config(format!("internal: {} missing", s.name)))?;
        tensors.push(params.tensors[i].clone());
        specs.push(s);
    }
    let meta = ModelMeta {
        config: cfg,
        folded_bn: true,
        ..meta.clone()
    };
    Ok(Extracted {
        params: Params {
            specs,
            tensors,
            has_column_stats: false,
        },
        meta,
    })
}
