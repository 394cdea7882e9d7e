use super::train::load_splits;
use super::{CliError, CliResult};
use fractalnet::backend::Backend;
use fractalnet::checkpoint;
use fractalnet::data::{self, DatasetKind, Split};
use fractalnet::model::io::{ModelMeta, RUN_KEY, load_from_raw, save_tensors};
use fractalnet::plan::KeepMask;
use fractalnet::train::{self, Evaluation, npy::write_npy};

use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    Test,
    Val,
    Train,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A model file (model.safetensors, a training checkpoint, or an extracted column).
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    dataset: String,
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    label: Option<String>,
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Evaluate column c alone (default: the full network, or the file's column).
    #[arg(long, conflicts_with = "all_columns")]
    column: Option<usize>,
    /// The full network and every column.
    #[arg(long)]
    all_columns: bool,
    #[arg(long)]
    json: bool,
    /// Write the logits (full network, or --column c) as float32 .npy [N, K].
    #[arg(long)]
    logits: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Validation hold-out and seed of --split val/train (default: the run's, from the file).
    #[arg(long)]
    val: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, vulkan, vulkan:N, or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn run_meta(raw: &checkpoint::RawCheckpoint) -> serde_json::Value {
    checkpoint::metadata_json(raw, RUN_KEY).unwrap_or(serde_json::Value::Null)
}

pub fn run(a: EvalArgs) -> CliResult<()> {
    let (device, threads) = (a.device.clone(), a.threads);
    super::device::dispatch(&device, threads, a)
}

impl super::device::OnBackend for EvalArgs {
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        eval_on(b, self)
    }
}

fn eval_on<B: Backend>(b: &B, a: EvalArgs) -> CliResult<()> {
    if a.batch_size == 0 {
        return Err(CliError::Usage("--batch-size must be at least 1".into()));
    }
    let raw = checkpoint::read(&a.checkpoint)?;
    let (mut net, meta) = load_from_raw(&raw, b)?;
    let run = run_meta(&raw);
    let kind = DatasetKind::parse(&a.dataset, a.label.as_deref())?;
    let cfg = net.config().clone();
    if kind.channels() != cfg.in_channels || kind.classes() > cfg.classes {
        return Err(CliError::Usage(format!(
            "--dataset {}: {} channels and {} classes, but the model takes {} channels and has {} classes",
            kind.name(),
            kind.channels(),
            kind.classes(),
            cfg.in_channels,
            cfg.classes
        )));
    }
    let images = match a.split {
        SplitArg::Test => data::load(kind, &a.data_dir, Split::Test)?,
        SplitArg::Val | SplitArg::Train => {
            let val = a
                .val
                .or(run["val"].as_u64().map(|v| v as usize))
                .unwrap_or(0);
            let seed = a.seed.or(run["seed"].as_u64()).unwrap_or(0);
            let subset = run["train_subset"].as_u64().map(|v| v as usize);
            let s = load_splits(kind, &a.data_dir, val, subset, seed)?;
            if a.split == SplitArg::Val {
                s.val.ok_or_else(|| {
                    CliError::Usage(
                        "--split val: the run held out no validation images (use --val N)".into(),
                    )
                })?
            } else {
                s.train
            }
        }
    };
    let column = match (a.column, meta.column) {
        (Some(c), Some(fc)) if c != fc => {
            return Err(CliError::Usage(format!(
                "--column {c}: {} holds only column {fc}",
                a.checkpoint.display()
            )));
        }
        (c, fc) => c.or(fc),
    };
    if a.all_columns && meta.column.is_some() {
        return Err(CliError::Usage(format!(
            "--all-columns: {} holds only one column",
            a.checkpoint.display()
        )));
    }
    let mut logits = a.logits.as_ref().map(|_| Vec::new());
    let main_mask = match column {
        Some(c) => KeepMask::column(&cfg, c)?,
        None => KeepMask::all(&cfg),
    };
    let stats = net.stats_for(column);
    let main = train::evaluate(
        b,
        &mut net,
        &images,
        &meta.input_mean,
        &meta.input_std,
        &main_mask,
        stats,
        a.batch_size,
        logits.as_mut(),
    )?;
    let mut cols: Vec<Evaluation> = Vec::new();
    if a.all_columns {
        for g in 0..cfg.columns {
            let s = net.stats_for(Some(g));
            cols.push(train::evaluate(
                b,
                &mut net,
                &images,
                &meta.input_mean,
                &meta.input_std,
                &KeepMask::column(&cfg, g)?,
                s,
                a.batch_size,
                None,
            )?);
        }
    }
    if let (Some(path), Some(l)) = (&a.logits, &logits) {
        write_npy(path, &[images.len(), cfg.classes], l)?;
    }
    let what = match column {
        Some(c) => format!("column {c}"),
        None => "full network".into(),
    };
    if a.json {
        let mut v = json!({"accuracy": main.accuracy, "loss": main.loss, "n": main.n, "ms_per_image": main.ms_per_image, "evaluated": what});
        if a.all_columns {
            v["columns"] = serde_json::to_value(&cols).unwrap_or_default();
        }
        println!("{v}");
    } else {
        println!(
            "{what:<14} accuracy {:.2}%  loss {:.4}  ({} images, {:.3} ms/image)",
            main.accuracy * 100.0,
            main.loss,
            main.n,
            main.ms_per_image
        );
        for (g, e) in cols.iter().enumerate() {
            println!(
                "column {g:<7} accuracy {:.2}%  loss {:.4}  ({:.3} ms/image)",
                e.accuracy * 100.0,
                e.loss,
                e.ms_per_image
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct CalibrateArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    dataset: String,
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    label: Option<String>,
    /// Training images to calibrate on.
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Where to write the calibrated model (default: over --checkpoint, atomically).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, vulkan, vulkan:N, or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn calibrate(a: CalibrateArgs) -> CliResult<()> {
    let (device, threads) = (a.device.clone(), a.threads);
    super::device::dispatch(&device, threads, a)
}

impl super::device::OnBackend for CalibrateArgs {
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        calibrate_on(b, self)
    }
}

fn calibrate_on<B: Backend>(b: &B, a: CalibrateArgs) -> CliResult<()> {
    let raw = checkpoint::read(&a.checkpoint)?;
    let (mut net, meta): (_, ModelMeta) = load_from_raw(&raw, b)?;
    if meta.column.is_some() {
        return Err(CliError::Usage(format!(
            "{}: an extracted column cannot be calibrated; calibrate the full model and extract again",
            a.checkpoint.display()
        )));
    }
    let run = run_meta(&raw);
    let kind = DatasetKind::parse(&a.dataset, a.label.as_deref())?;
    let val = run["val"].as_u64().unwrap_or(0) as usize;
    let seed = run["seed"].as_u64().unwrap_or(0);
    let s = load_splits(
        kind,
        &a.data_dir,
        val,
        run["train_subset"].as_u64().map(|v| v as usize),
        seed,
    )?;
    train::calibrate(
        b,
        &mut net,
        &s.train,
        &meta.input_mean,
        &meta.input_std,
        a.n,
        a.batch_size,
        seed,
    )?;
    let out = a.out.unwrap_or(a.checkpoint.clone());
    let extra: BTreeMap<String, String> = raw
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() == RUN_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    save_tensors(&out, b, &net.params, &meta, &extra, |_| true)?;
    println!(
        "calibrated BN statistics of the full network and {} columns over {} images -> {}",
        net.config().columns,
        a.n.min(s.train.len()),
        out.display()
    );
    Ok(())
}
