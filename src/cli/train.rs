use super::{CliError, CliResult, parse_list};
use fractalnet::Error;
use fractalnet::backend::Backend;
use fractalnet::data::{self, DatasetKind, Split};
use fractalnet::model::io::{ModelMeta, save_tensors};
use fractalnet::model::stats::stats;
use fractalnet::model::{Network, Sgd};
use fractalnet::plan::{FractalConfig, KeepMask};
use fractalnet::train::checkpoint::{RunSpec, load_training, run_metadata, save_training};
use fractalnet::train::{self, DataSplits, EpochEnd, EpochMetrics, Recipe, Schedule, TrainState};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Named presets; every value is also a flag, and a flag given explicitly wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecipeName {
    /// The paper's: lr 0.02, momentum 0.9, no weight decay, dropout 0,0.1,0.2,0.3,0.4,
    /// drop-path 50% global / 50% local (p 0.15), batch 100, precise BN.
    Paper,
    /// For short runs (a few epochs): no dropout, batch 32, lr 0.05 on a per-step cosine
    /// schedule, weight decay 5e-4; the paper's drop-path and precise BN.
    Fast,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    Step,
    Cosine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DropPathArg {
    /// Per mini-batch, global with probability --global-ratio, else local with --local-p.
    Mix,
    Local,
    Global,
    None,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// cifar10, cifar100, svhn, svhn-extra, mnist, fashion-mnist.
    #[arg(long)]
    dataset: Option<String>,
    /// Directory holding the data set's files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// CIFAR-100 labels: fine (100 classes) or coarse (20).
    #[arg(long)]
    label: Option<String>,
    #[arg(long, value_enum, default_value = "paper")]
    recipe: RecipeName,
    /// --columns, --channels and the architecture flags (boxed: they would make this the
    /// one large variant of `Command`).
    #[command(flatten)]
    net: Box<super::arch::ArchArgs>,
    /// Blocks (default: the number of --channels entries).
    #[arg(long)]
    blocks: Option<usize>,
    /// Classes (default: the data set's).
    #[arg(long)]
    classes: Option<usize>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f32>,
    #[arg(long)]
    momentum: Option<f32>,
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Learning-rate schedule: step (the paper's: /10 each time the remaining epochs halve)
    /// or cosine (every step, to zero at the end).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    #[arg(long, value_enum)]
    drop_path: Option<DropPathArg>,
    #[arg(long)]
    global_ratio: Option<f64>,
    #[arg(long)]
    local_p: Option<f64>,
    /// Dropout rate per block, e.g. 0,0.1,0.2,0.3,0.4.
    #[arg(long)]
    dropout: Option<String>,
    /// none | translate-flip (the paper's "+") | reflect ("++").
    #[arg(long)]
    augment: Option<String>,
    /// Training images held out for validation (chosen by the seed).
    #[arg(long, default_value_t = 5000)]
    val: usize,
    /// Train on only the first N remaining training images.
    #[arg(long)]
    train_subset: Option<usize>,
    /// Training images for precise-BN calibration before each validation and at the end
    /// (0 = keep the moving averages, as in the paper).
    #[arg(long)]
    bn_calib: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Run directory (config.json, metrics.jsonl, model.safetensors, best.safetensors,
    /// checkpoint.safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its checkpoint (every other setting comes from it;
    /// --data-dir and --threads may be given).
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Also keep the checkpoints of the last N epochs (checkpoint-epochE.safetensors).
    #[arg(long, default_value_t = 0)]
    keep: usize,
    /// Train the plain network of the deepest column's depth (one column, no joins, no
    /// drop-path): the paper's Table 4 baseline.
    #[arg(long)]
    plain: bool,
    /// cpu, vulkan, vulkan:N, or auto (a Vulkan GPU when there is one, else the CPU).
    #[arg(long, default_value = "auto")]
    device: String,
}

/// The data set's training split, less the validation hold-out, and its statistics.
pub fn load_splits(
    kind: DatasetKind,
    dir: &Path,
    val: usize,
    subset: Option<usize>,
    seed: u64,
) -> CliResult<DataSplits> {
    let all = data::load(kind, dir, Split::Train)?;
    let (mut train, val) = data::split_validation(all, val, seed)?;
    if let Some(n) = subset {
        if n == 0 {
            return Err(CliError::Usage("--train-subset must be at least 1".into()));
        }
        let idx: Vec<usize> = (0..n.min(train.len())).collect();
        train = train.subset(&idx);
    }
    let (mean, std) = train.channel_stats();
    if std.iter().any(|&s| s <= 0.0) {
        return Err(Error::format(
            dir,
            "a channel of the training images is constant (std 0): cannot normalise",
        )
        .into());
    }
    Ok(DataSplits {
        train,
        val: if val.is_empty() { None } else { Some(val) },
        mean,
        std,
    })
}

pub fn run(a: TrainArgs) -> CliResult<()> {
    let (device, threads) = (a.device.clone(), a.threads);
    super::device::dispatch(&device, threads, a)
}

impl super::device::OnBackend for TrainArgs {
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        run_on(b, self)
    }
}

fn run_on<B: Backend>(b: &B, a: TrainArgs) -> CliResult<()> {
    if let Some(dir) = &a.resume {
        let ck = dir.join(CHECKPOINT);
        if !ck.exists() {
            // Stopped before its first checkpoint: start it again from its config.json.
            let cfg_path = dir.join("config.json");
            let text = std::fs::read_to_string(&cfg_path).map_err(|_| {
                CliError::Usage(format!(
                    "--resume {}: neither {CHECKPOINT} nor config.json there",
                    dir.display()
                ))
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::format(&cfg_path, e.to_string()))?;
            let mut spec: RunSpec = serde_json::from_value(v["run"].clone())
                .map_err(|e| Error::format(&cfg_path, format!("run: {e}")))?;
            let cfg: FractalConfig = serde_json::from_value(v["network"].clone())
                .map_err(|e| Error::format(&cfg_path, format!("network: {e}")))?;
            if let Some(d) = &a.data_dir {
                spec.data_dir = d.clone();
            }
            truncate_metrics(&dir.join("metrics.jsonl"), 0)?;
            println!(
                "restarting {} from its config.json (it stopped before its first checkpoint)",
                dir.display()
            );
            return start(b, spec, cfg, dir, a.keep);
        }
        let r = load_training(&ck, b)?;
        let mut spec = r.spec;
        if let Some(d) = &a.data_dir {
            spec.data_dir = d.clone();
        }
        truncate_metrics(&dir.join("metrics.jsonl"), r.state.epoch)?;
        println!(
            "resuming {} at epoch {} step {} (of {} epochs)",
            dir.display(),
            r.state.epoch + 1,
            r.state.step_in_epoch,
            spec.recipe.epochs
        );
        return train_loop(b, &spec, dir, r.net, r.sgd, r.meta, r.state, a.keep);
    }
    let dataset = a
        .dataset
        .clone()
        .ok_or_else(|| CliError::Usage("--dataset is required (or --resume RUN_DIR)".into()))?;
    let data_dir = a
        .data_dir
        .clone()
        .ok_or_else(|| CliError::Usage("--data-dir is required (or --resume RUN_DIR)".into()))?;
    let kind = DatasetKind::parse(&dataset, a.label.as_deref())?;
    let fast = a.recipe == RecipeName::Fast;
    let base = a.net.base(
        Some((3, "16,32,64,128,128")),
        kind.channels(),
        a.classes.unwrap_or(kind.classes()),
    )?;
    let blocks = a.blocks.unwrap_or(base.channels.len());
    let dropout: Vec<f32> = match &a.dropout {
        Some(s) => parse_list("--dropout", s)?,
        None if fast => vec![0.0; blocks],
        None => (0..blocks).map(|i| (i as f32 * 0.1).min(0.9)).collect(),
    };
    let (global_ratio, local_p) = match a.drop_path.unwrap_or(DropPathArg::Mix) {
        _ if a.plain => (0.0, 0.0),
        DropPathArg::Mix => (a.global_ratio.unwrap_or(0.5), a.local_p.unwrap_or(0.15)),
        DropPathArg::Local => (0.0, a.local_p.unwrap_or(0.15)),
        DropPathArg::Global => (1.0, 0.0),
        DropPathArg::None => (0.0, 0.0),
    };
    let recipe = Recipe {
        epochs: a.epochs.unwrap_or(if fast { 8 } else { 400 }),
        batch_size: a.batch_size.unwrap_or(if fast { 32 } else { 100 }),
        lr: a.lr.unwrap_or(if fast { 0.05 } else { 0.02 }),
        momentum: a.momentum.unwrap_or(0.9),
        weight_decay: a.weight_decay.unwrap_or(if fast { 5e-4 } else { 0.0 }),
        global_ratio,
        local_p,
        augment: a.augment.clone().unwrap_or_else(|| "none".into()),
        bn_calib: a.bn_calib.unwrap_or(10_000),
        seed: a.seed,
        schedule: match a.schedule {
            Some(ScheduleArg::Step) => Schedule::Step,
            Some(ScheduleArg::Cosine) => Schedule::Cosine,
            None if fast => Schedule::Cosine,
            None => Schedule::Step,
        },
    };
    recipe.validate()?;
    let mut cfg = base;
    cfg.input_hw = [32, 32]; // every data set's images (28x28 ones padded by the loader)
    cfg.blocks = blocks;
    cfg.dropout = dropout;
    let base_columns = cfg.columns;
    if a.plain {
        cfg.plain_layers = Some(cfg.deepest());
        cfg.columns = 1;
    }
    cfg.validate()?;
    if cfg.classes < kind.classes() {
        return Err(CliError::Usage(format!(
            "--classes {} is fewer than the {} classes of {}",
            cfg.classes,
            kind.classes(),
            kind.name()
        )));
    }
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/{}-c{}{}-seed{}",
            kind.name(),
            base_columns,
            if a.plain { "-plain" } else { "" },
            a.seed
        ))
    });
    if out.join("metrics.jsonl").exists() || out.join(CHECKPOINT).exists() {
        return Err(CliError::Usage(format!(
            "--out {}: already holds a run; resume it with --resume {0} or choose another --out",
            out.display()
        )));
    }
    let spec = RunSpec {
        dataset: kind.name().to_string(),
        label: a.label.clone(),
        data_dir,
        val: a.val,
        train_subset: a.train_subset,
        seed: a.seed,
        plain: a.plain,
        recipe,
    };
    start(b, spec, cfg, &out, a.keep)
}

/// A new run from its specification: config.json first, then training from epoch 0.
fn start<B: Backend>(
    b: &B,
    spec: RunSpec,
    cfg: FractalConfig,
    out: &Path,
    keep: usize,
) -> CliResult<()> {
    let kind = DatasetKind::parse(&spec.dataset, spec.label.as_deref())?;
    let data = load_splits(kind, &spec.data_dir, spec.val, spec.train_subset, spec.seed)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let net = Network::new(b, &cfg, spec.seed)?;
    let sgd = Sgd::new(
        b,
        &net.params,
        spec.recipe.lr,
        spec.recipe.momentum,
        spec.recipe.weight_decay,
    )?;
    let meta = ModelMeta::new(cfg.clone(), data.mean.clone(), data.std.clone());
    let st = stats(&net.plan, spec.recipe.batch_size);
    let config_json = json!({
        "run": spec, "train_images": data.train.len(), "val_images": data.val.as_ref().map_or(0, |v| v.len()),
        "network": cfg, "recipe": spec.recipe, "device": b.name(), "params": st.params,
        "input_mean": data.mean, "input_std": data.std,
    });
    write_text(
        &out.join("config.json"),
        &serde_json::to_string_pretty(&config_json).unwrap_or_default(),
    )?;
    let seed = spec.seed;
    train_loop(b, &spec, out, net, sgd, meta, TrainState::new(seed), keep)
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";

#[allow(clippy::too_many_arguments)]
fn train_loop<B: Backend>(
    b: &B,
    spec: &RunSpec,
    out: &Path,
    mut net: Network<B>,
    mut sgd: Sgd<B>,
    meta: ModelMeta,
    mut state: TrainState,
    keep: usize,
) -> CliResult<()> {
    let kind = DatasetKind::parse(&spec.dataset, spec.label.as_deref())?;
    let data = load_splits(kind, &spec.data_dir, spec.val, spec.train_subset, spec.seed)?;
    if data.mean != meta.input_mean || data.std != meta.input_std {
        return Err(Error::format(
            &spec.data_dir,
            "the training images differ from the run's (their mean/std changed)",
        )
        .into());
    }
    let recipe = &spec.recipe;
    let cfg = net.config().clone();
    let st = stats(&net.plan, recipe.batch_size);
    println!(
        "training {} on {} ({} train, {} val images), {} parameters, depth {}, on {}",
        if spec.plain {
            "the plain network"
        } else {
            "FractalNet"
        },
        kind.name(),
        data.train.len(),
        data.val.as_ref().map_or(0, |v| v.len()),
        st.params,
        cfg.depth(),
        b.name()
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C gives up waiting for the step to finish.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let (run_k, run_v) = run_metadata(spec);
    let run_meta = BTreeMap::from([(run_k, run_v)]);
    let metrics_path = out.join("metrics.jsonl");
    let total_start = Instant::now();
    while state.epoch < recipe.epochs {
        let epoch = state.epoch;
        // the rate at the epoch's first step (the cosine schedule moves on every step)
        let lr = recipe.lr_at_step(
            epoch,
            0,
            train::steps_per_epoch(data.train.len(), recipe.batch_size),
        );
        let bar = ProgressBar::new(data.train.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, recipe.epochs));
        bar.set_position(state.seen as u64);
        let start = Instant::now();
        let end = train::train_epoch(
            b,
            &mut net,
            &mut sgd,
            recipe,
            &data,
            &mut state,
            &stop,
            |done, loss, acc| {
                bar.set_position(done as u64);
                bar.set_message(format!("loss {loss:.4} acc {:.2}%", acc * 100.0));
            },
        )?;
        bar.finish_and_clear();
        let tot = match end {
            EpochEnd::Interrupted => {
                state.epoch_seconds += start.elapsed().as_secs_f64();
                save_training(&out.join(CHECKPOINT), b, &net, &sgd, &meta, spec, &state)?;
                eprintln!(
                    "interrupted at epoch {} step {}: saved {}; continue with: fractalnet train --resume {}",
                    state.epoch + 1,
                    state.step_in_epoch,
                    out.join(CHECKPOINT).display(),
                    out.display()
                );
                std::process::exit(130);
            }
            EpochEnd::Finished(t) => t,
        };
        let train_secs = state.epoch_seconds + start.elapsed().as_secs_f64();
        train::calibrate(
            b,
            &mut net,
            &data.train,
            &data.mean,
            &data.std,
            recipe.bn_calib,
            recipe.batch_size,
            recipe.seed,
        )?;
        let (mut val_loss, mut val_acc, mut val_cols, mut val_col_loss) = (None, None, None, None);
        if let Some(v) = &data.val {
            let full_stats = net.stats_for(None);
            let full = train::evaluate(
                b,
                &mut net,
                v,
                &data.mean,
                &data.std,
                &KeepMask::all(&cfg),
                full_stats,
                recipe.batch_size,
                None,
            )?;
            let mut accs = Vec::new();
            let mut losses = Vec::new();
            for g in 0..cfg.columns {
                let m = KeepMask::column(&cfg, g)?;
                let s = net.stats_for(Some(g));
                let e = train::evaluate(
                    b,
                    &mut net,
                    v,
                    &data.mean,
                    &data.std,
                    &m,
                    s,
                    recipe.batch_size,
                    None,
                )?;
                accs.push(e.accuracy);
                losses.push(e.loss);
            }
            val_loss = Some(full.loss);
            val_acc = Some(full.accuracy);
            val_cols = Some(accs);
            val_col_loss = Some(losses);
        }
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss: tot.loss_sum / tot.seen as f64,
            train_acc: tot.correct as f64 / tot.seen as f64,
            val_loss,
            val_acc,
            val_acc_columns: val_cols.clone(),
            val_loss_columns: val_col_loss,
            seconds: state.epoch_seconds + start.elapsed().as_secs_f64(),
            images_per_s: tot.seen as f64 / train_secs,
        };
        append_line(
            &metrics_path,
            &serde_json::to_string(&m).unwrap_or_default(),
        )?;
        save_tensors(
            &out.join("model.safetensors"),
            b,
            &net.params,
            &meta,
            &run_meta,
            |_| true,
        )?;
        if let Some(acc) = val_acc
            && state.best_val_acc.is_none_or(|best| acc > best)
        {
            state.best_val_acc = Some(acc);
            save_tensors(
                &out.join("best.safetensors"),
                b,
                &net.params,
                &meta,
                &run_meta,
                |_| true,
            )?;
        }
        save_training(&out.join(CHECKPOINT), b, &net, &sgd, &meta, spec, &state)?;
        if keep > 0 {
            let kept = out.join(format!("checkpoint-epoch{}.safetensors", state.epoch));
            std::fs::copy(out.join(CHECKPOINT), &kept).map_err(|e| Error::io(&kept, e))?;
            if state.epoch > keep {
                let old = out.join(format!(
                    "checkpoint-epoch{}.safetensors",
                    state.epoch - keep
                ));
                let _ = std::fs::remove_file(old);
            }
        }
        let cols = val_cols
            .map(|v| {
                v.iter()
                    .map(|a| format!("{:.2}", a * 100.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default();
        println!(
            "epoch {:>3}/{} lr {:.4} train loss {:.4} acc {:.2}% | val {} | columns {} | {:.0} img/s, {:.0}s",
            epoch + 1,
            recipe.epochs,
            lr,
            m.train_loss,
            m.train_acc * 100.0,
            val_acc
                .map(|a| format!("{:.2}%", a * 100.0))
                .unwrap_or_else(|| "-".into()),
            if cols.is_empty() { "-".into() } else { cols },
            m.images_per_s,
            m.seconds
        );
    }
    println!(
        "done in {:.0}s; model in {}",
        total_start.elapsed().as_secs_f64(),
        out.join("model.safetensors").display()
    );
    Ok(())
}

/// Keeps the first `epochs` lines: lines of epochs after the checkpoint are redone on resume.
fn truncate_metrics(path: &Path, epochs: usize) -> CliResult<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text.lines().take(epochs).collect();
    let mut s = kept.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    write_text(path, &s)
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub fn write_text(path: &Path, s: &str) -> CliResult<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, s).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e).into())
}

fn append_line(path: &Path, line: &str) -> CliResult<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))?;
    f.sync_data().map_err(|e| Error::io(path, e).into())
}
