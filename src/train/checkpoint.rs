//! Training checkpoints: the model (shared/SPEC.md names, with calibrated column statistics
//! when there are some), the optimiser's velocities (`optim.v.<name>`), and under the
//! metadata key `fractalnet_train` the run's specification and `TrainState` (position,
//! every random stream, the epoch's running totals). A run resumed from one continues bit for
//! bit as if it had never stopped.

use super::{Recipe, TrainState};
use crate::backend::Backend;
use crate::checkpoint::{self, TensorSpec};
use crate::error::{Error, Result};
use crate::model::io::{
    CONFIG_KEY, ModelMeta, OPTIM_PREFIX, RUN_KEY, TRAIN_KEY, expected_tensors, optimiser_tensors,
    params_from_raw, read_meta,
};
use crate::model::{Network, Role, Sgd};
use crate::plan::Plan;
use crate::tensor::Shape;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a run trains on and how: enough to restart it with `--resume` and nothing else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub dataset: String,
    pub label: Option<String>,
    pub data_dir: PathBuf,
    pub val: usize,
    pub train_subset: Option<usize>,
    pub seed: u64,
    pub plain: bool,
    pub recipe: Recipe,
}

#[derive(Serialize, Deserialize)]
struct TrainMeta {
    spec: RunSpec,
    state: TrainState,
    has_column_stats: bool,
}

/// The metadata `eval` reads to rebuild the run's validation split.
pub fn run_metadata(spec: &RunSpec) -> (String, String) {
    let v = serde_json::json!({"dataset": spec.dataset, "val": spec.val, "seed": spec.seed, "train_subset": spec.train_subset});
    (RUN_KEY.to_string(), v.to_string())
}

pub fn save_training<B: Backend>(
    path: &Path,
    b: &B,
    net: &Network<B>,
    sgd: &Sgd<B>,
    meta: &ModelMeta,
    spec: &RunSpec,
    state: &TrainState,
) -> Result<()> {
    let params = &net.params;
    let mut host: Vec<(String, Shape, Vec<f32>)> = Vec::new();
    for (s, t) in params.specs.iter().zip(&params.tensors) {
        if matches!(s.role, Role::ColumnMean | Role::ColumnVar) && !params.has_column_stats {
            continue;
        }
        host.push((s.name.clone(), s.shape.clone(), b.to_host(t)?));
    }
    for (i, s) in params.specs.iter().enumerate() {
        if s.role.trainable() {
            host.push((
                format!("{OPTIM_PREFIX}{}", s.name),
                s.shape.clone(),
                b.to_host(&sgd.velocity[i])?,
            ));
        }
    }
    let refs: Vec<(String, Shape, &[f32])> = host
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice()))
        .collect();
    let tm = TrainMeta {
        spec: spec.clone(),
        state: state.clone(),
        has_column_stats: params.has_column_stats,
    };
    let json_err = |e: serde_json::Error| Error::format(path, e.to_string());
    let md = BTreeMap::from([
        (
            CONFIG_KEY.to_string(),
            serde_json::to_string(meta).map_err(json_err)?,
        ),
        run_metadata(spec),
        (
            TRAIN_KEY.to_string(),
            serde_json::to_string(&tm).map_err(json_err)?,
        ),
    ]);
    checkpoint::write_atomic(path, &md, &refs)
}

/// Everything a resumed run starts from.
pub struct Resumed<B: Backend> {
    pub net: Network<B>,
    pub sgd: Sgd<B>,
    pub meta: ModelMeta,
    pub spec: RunSpec,
    pub state: TrainState,
}

pub fn load_training<B: Backend>(path: &Path, b: &B) -> Result<Resumed<B>> {
    let raw = checkpoint::read(path)?;
    let meta = read_meta(&raw)?;
    let tm: TrainMeta = serde_json::from_value(checkpoint::metadata_json(&raw, TRAIN_KEY)?)
        .map_err(|e| Error::format(path, format!("{TRAIN_KEY}: {e}")))?;
    tm.spec
        .recipe
        .validate()
        .map_err(|e| Error::format(path, format!("{TRAIN_KEY}: {e}")))?;
    if meta.column.is_some() {
        return Err(Error::format(
            path,
            "an extracted column is not a training checkpoint",
        ));
    }
    let plan = Plan::new(&meta.config)?;
    let (mut required, optional) = expected_tensors(&plan, None);
    let optim = optimiser_tensors(&plan);
    required.extend(optim.iter().cloned());
    if tm.has_column_stats {
        required.extend(optional.iter().cloned());
        checkpoint::validate(&raw, &required, &[])?;
    } else {
        checkpoint::validate(&raw, &required, &[])?;
    }
    let velocities: Vec<(String, Vec<f32>)> = optim
        .iter()
        .map(|s: &TensorSpec| {
            (
                s.name[OPTIM_PREFIX.len()..].to_string(),
                raw.tensors
                    .get(&s.name)
                    .map(|t| t.1.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let (net, meta) = params_from_raw(&raw, b, plan, &optional, meta)?;
    let mut sgd = Sgd::new(
        b,
        &net.params,
        tm.spec.recipe.lr,
        tm.spec.recipe.momentum,
        tm.spec.recipe.weight_decay,
    )?;
    for (name, v) in velocities {
        let i = net
            .params
            .index(&name)
            .ok_or_else(|| Error::format(path, format!("velocity of unknown tensor {name}")))?;
        sgd.velocity[i] = b.from_host(net.params.specs[i].shape.clone(), &v)?;
    }
    Ok(Resumed {
        net,
        sgd,
        meta,
        spec: tm.spec,
        state: tm.state,
    })
}
