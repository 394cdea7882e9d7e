//! Model files: a network's tensors under the names of shared/SPEC.md plus the
//! `fractalnet_config` metadata, in safetensors (see `crate::checkpoint`).

use super::{Network, Params, Role, param_specs};
use crate::backend::Backend;
use crate::checkpoint::{self, RawCheckpoint, TensorSpec};
use crate::error::{Error, Result};
use crate::plan::{FractalConfig, Plan, UnitKind};
use crate::tensor::Shape;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;
pub const CONFIG_KEY: &str = "fractalnet_config";
/// Metadata of the run that produced a file: {"dataset", "val", "seed", "train_subset"}, so
/// that `eval --split val` rebuilds the same validation split.
pub const RUN_KEY: &str = "fractalnet_run";

/// The `fractalnet_config` metadata object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format_version: u32,
    #[serde(flatten)]
    pub config: FractalConfig,
    /// Per input channel, of pixel / 255 over the training images (the model's preprocessing).
    pub input_mean: Vec<f32>,
    pub input_std: Vec<f32>,
    /// Set in a file extracted from one column: it holds only that column's tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Set when every unit's BatchNorm is folded into its convolution (`unit` is then
    /// `conv_bias_relu`: `conv.weight` and `conv.bias` per layer, no `bn.*`). Inference only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub folded_bn: bool,
}

impl ModelMeta {
    pub fn new(config: FractalConfig, input_mean: Vec<f32>, input_std: Vec<f32>) -> Self {
        ModelMeta {
            format_version: FORMAT_VERSION,
            config,
            input_mean,
            input_std,
            column: None,
            folded_bn: false,
        }
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |what: String| Err(Error::format(path, format!("{CONFIG_KEY}: {what}")));
        if self.format_version != FORMAT_VERSION {
            return bad(format!(
                "format_version {} is not supported (expected {FORMAT_VERSION})",
                self.format_version
            ));
        }
        self.config
            .validate()
            .map_err(|e| Error::format(path, format!("{CONFIG_KEY}: {e}")))?;
        let c = self.config.in_channels;
        if self.input_mean.len() != c || self.input_std.len() != c {
            return bad(format!(
                "input_mean/input_std have {}/{} entries, expected {c} (in_channels)",
                self.input_mean.len(),
                self.input_std.len()
            ));
        }
        if self.input_mean.iter().any(|v| !v.is_finite())
            || self.input_std.iter().any(|v| !v.is_finite() || *v <= 0.0)
        {
            return bad("input_mean must be finite and input_std finite and positive".into());
        }
        if self.folded_bn != (self.config.unit == UnitKind::ConvBiasRelu) {
            return bad(format!(
                "folded_bn is {} but unit is {:?}: a folded file has unit conv_bias_relu, and only it",
                self.folded_bn, self.config.unit
            ));
        }
        if let Some(col) = self.column
            && col >= self.config.columns
        {
            return bad(format!(
                "column {col} is out of range for {} columns",
                self.config.columns
            ));
        }
        Ok(())
    }
}

/// Which tensors a file with this metadata must hold: (required, optional column statistics).
pub fn expected_tensors(plan: &Plan, column: Option<usize>) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
    let mut required = Vec::new();
    let mut optional = Vec::new();
    for s in param_specs(plan) {
        if !s.role.stored() {
            continue;
        }
        if let Some(c) = column
            && !super::in_column(&s.name, c)
        {
            continue;
        }
        let spec = TensorSpec {
            name: s.name.clone(),
            shape: s.shape.clone(),
        };
        match s.role {
            Role::ColumnMean | Role::ColumnVar => optional.push(spec),
            _ => required.push(spec),
        }
    }
    (required, optional)
}

/// Writes `net` (atomically) with its metadata. Column statistics are written when the
/// network has calibrated ones.
pub fn save_model<B: Backend>(
    path: &Path,
    b: &B,
    net: &Network<B>,
    meta: &ModelMeta,
) -> Result<()> {
    save_tensors(path, b, &net.params, meta, &BTreeMap::new(), |_| true)
}

/// Writes the tensors of `params` selected by `keep`, plus `meta` and `extra` metadata.
pub fn save_tensors<B: Backend>(
    path: &Path,
    b: &B,
    params: &Params<B>,
    meta: &ModelMeta,
    extra: &BTreeMap<String, String>,
    keep: impl Fn(&str) -> bool,
) -> Result<()> {
    let mut host = Vec::new();
    for (s, t) in params.specs.iter().zip(&params.tensors) {
        let column_stat = matches!(s.role, Role::ColumnMean | Role::ColumnVar);
        if (column_stat && !params.has_column_stats) || !s.role.stored() || !keep(&s.name) {
            continue;
        }
        host.push((s.name.clone(), s.shape.clone(), b.to_host(t)?));
    }
    let refs: Vec<(String, Shape, &[f32])> = host
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice()))
        .collect();
    let mut md = extra.clone();
    md.insert(
        CONFIG_KEY.into(),
        serde_json::to_string(meta).map_err(|e| Error::format(path, e.to_string()))?,
    );
    checkpoint::write_atomic(path, &md, &refs)
}

/// Reads and validates the metadata of a file.
pub fn read_meta(raw: &RawCheckpoint) -> Result<ModelMeta> {
    let v = checkpoint::metadata_json(raw, CONFIG_KEY)?;
    let meta: ModelMeta = serde_json::from_value(v)
        .map_err(|e| Error::format(&raw.path, format!("{CONFIG_KEY}: {e}")))?;
    meta.check(&raw.path)?;
    Ok(meta)
}

/// Loads a model file (a full network, or a column extracted from one, BatchNorm folded or
/// not) onto backend `b`.
/// Everything is validated: metadata, every expected tensor with its shape, no extra tensor,
/// finite values. Tensors an extracted file does not hold (other columns) are left at their
/// initial values; they are dead under the file's column mask and never computed.
pub fn load_model<B: Backend>(path: &Path, b: &B) -> Result<(Network<B>, ModelMeta)> {
    let raw = checkpoint::read(path)?;
    load_from_raw(&raw, b)
}

pub fn load_from_raw<B: Backend>(raw: &RawCheckpoint, b: &B) -> Result<(Network<B>, ModelMeta)> {
    let meta = read_meta(raw)?;
    let plan = Plan::new(&meta.config)?;
    let (required, optional) = expected_tensors(&plan, meta.column);
    // A training checkpoint also holds the optimiser's velocities; a model reader ignores them.
    let optim: Vec<TensorSpec> = if raw.metadata.contains_key(TRAIN_KEY) && meta.column.is_none() {
        optimiser_tensors(&plan)
    } else {
        Vec::new()
    };
    checkpoint::validate(raw, &required, &[optional.clone(), optim])?;
    params_from_raw(raw, b, plan, &optional, meta)
}

/// Metadata key of a training checkpoint's state (see `crate::train::checkpoint`).
pub const TRAIN_KEY: &str = "fractalnet_train";
/// Prefix of the optimiser's velocity tensors in a training checkpoint.
pub const OPTIM_PREFIX: &str = "optim.v.";

/// `optim.v.<name>` for every trainable tensor.
pub fn optimiser_tensors(plan: &Plan) -> Vec<TensorSpec> {
    param_specs(plan)
        .into_iter()
        .filter(|s| s.role.trainable())
        .map(|s| TensorSpec {
            name: format!("{OPTIM_PREFIX}{}", s.name),
            shape: s.shape,
        })
        .collect()
}

/// Builds the network from a validated file.
pub fn params_from_raw<B: Backend>(
    raw: &RawCheckpoint,
    b: &B,
    plan: Plan,
    optional: &[TensorSpec],
    meta: ModelMeta,
) -> Result<(Network<B>, ModelMeta)> {
    let has_column_stats = optional
        .first()
        .is_some_and(|s| raw.tensors.contains_key(&s.name));
    let specs = param_specs(&plan);
    let mut tensors = Vec::with_capacity(specs.len());
    for s in &specs {
        let t = match raw.tensors.get(&s.name) {
            Some((shape, v)) => b.from_host(shape.clone(), v)?,
            None => b.from_host(s.shape.clone(), &vec![s.role.fill(); s.shape.numel()])?,
        };
        tensors.push(t);
    }
    let params = Params {
        specs,
        tensors,
        has_column_stats,
    };
    let mut net = Network::from_params(plan, params)?;
    net.prepare(b, meta.column)?;
    Ok((net, meta))
}
