use super::{parse_list, CliError, CliResult};
use fractalnet::backend::{Backend, Cpu};
use fractalnet::data::{self, DatasetKind, Split};
use fractalnet::model::io::{save_tensors, ModelMeta, RUN_KEY};
use fractalnet::model::stats::stats;
use fractalnet::model::{Network, Sgd};
use fractalnet::plan::{FractalConfig, KeepMask};
use fractalnet::train::{self, DataSplits, EpochMetrics, Recipe, TrainState};
use fractalnet::Error;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Named presets; every value is also a flag, and a flag given explicitly wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecipeName {
    /// The paper's: lr 0.02, momentum 0.9, no weight decay, dropout 0,0.1,0.2,0.3,0.4,
    /// drop-path 50% global / 50% local (p 0.15), batch 100, precise BN.
    Paper,
    /// For short runs (a few epochs): no dropout, higher learning rate, light weight decay.
    Fast,
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
    dataset: String,
    /// Directory holding the data set's files.
    #[arg(long)]
    data_dir: PathBuf,
    /// CIFAR-100 labels: fine (100 classes) or coarse (20).
    #[arg(long)]
    label: Option<String>,
    #[arg(long, value_enum, default_value = "paper")]
    recipe: RecipeName,
    #[arg(long, default_value_t = 3)]
    columns: usize,
    /// Blocks (default: the number of --channels entries).
    #[arg(long)]
    blocks: Option<usize>,
    #[arg(long, default_value = "16,32,64,128,128")]
    channels: String,
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
    /// Run directory (config.json, metrics.jsonl, model.safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train the plain network of the deepest column's depth (one column, no joins, no
    /// drop-path): the paper's Table 4 baseline.
    #[arg(long)]
    plain: bool,
    /// cpu (the only device so far).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// The data set's training split, less the validation hold-out, and its statistics.
pub fn load_splits(kind: DatasetKind, dir: &Path, val: usize, subset: Option<usize>, seed: u64) -> CliResult<DataSplits> {
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
        return Err(Error::format(dir, "a channel of the training images is constant (std 0): cannot normalise").into());
    }
    Ok(DataSplits { train, val: if val.is_empty() { None } else { Some(val) }, mean, std })
}

pub fn run(a: TrainArgs) -> CliResult<()> {
    if a.device != "cpu" {
        return Err(CliError::Usage(format!("--device {}: only cpu is available in this build", a.device)));
    }
    let b = Cpu::with_threads(a.threads.unwrap_or(0));
    let kind = DatasetKind::parse(&a.dataset, a.label.as_deref())?;
    let fast = a.recipe == RecipeName::Fast;
    let channels: Vec<usize> = parse_list("--channels", &a.channels)?;
    let blocks = a.blocks.unwrap_or(channels.len());
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
        batch_size: a.batch_size.unwrap_or(100),
        lr: a.lr.unwrap_or(if fast { 0.05 } else { 0.02 }),
        momentum: a.momentum.unwrap_or(0.9),
        weight_decay: a.weight_decay.unwrap_or(if fast { 5e-4 } else { 0.0 }),
        global_ratio,
        local_p,
        augment: a.augment.clone().unwrap_or_else(|| "none".into()),
        bn_calib: a.bn_calib.unwrap_or(10_000),
        seed: a.seed,
    };
    recipe.validate()?;
    let mut cfg = FractalConfig::new(a.columns, channels, kind.channels(), a.classes.unwrap_or(kind.classes()));
    cfg.blocks = blocks;
    cfg.dropout = dropout;
    if a.plain {
        cfg.plain_layers = Some(cfg.deepest());
        cfg.columns = 1;
    }
    cfg.validate()?;
    if cfg.classes < kind.classes() {
        return Err(CliError::Usage(format!("--classes {} is fewer than the {} classes of {}", cfg.classes, kind.classes(), kind.name())));
    }
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!("runs/{}-c{}{}-seed{}", kind.name(), a.columns, if a.plain { "-plain" } else { "" }, a.seed))
    });
    if out.join("metrics.jsonl").exists() {
        return Err(CliError::Usage(format!("--out {}: already holds a run (metrics.jsonl); choose another --out", out.display())));
    }
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;

    let data = load_splits(kind, &a.data_dir, a.val, a.train_subset, a.seed)?;
    let mut net = Network::new(&b, &cfg, a.seed)?;
    let mut sgd = Sgd::new(&b, &net.params, recipe.lr, recipe.momentum, recipe.weight_decay)?;
    let meta = ModelMeta::new(cfg.clone(), data.mean.clone(), data.std.clone());
    let st = stats(&net.plan, recipe.batch_size);
    let config_json = json!({
        "dataset": kind.name(), "data_dir": a.data_dir, "val": a.val, "train_subset": a.train_subset,
        "train_images": data.train.len(), "val_images": data.val.as_ref().map_or(0, |v| v.len()),
        "network": cfg, "recipe": recipe, "plain": a.plain, "device": b.name(), "params": st.params,
        "input_mean": data.mean, "input_std": data.std,
    });
    write_text(&out.join("config.json"), &serde_json::to_string_pretty(&config_json).unwrap_or_default())?;
    println!(
        "training {} on {} ({} train, {} val images), {} parameters, depth {}, on {}",
        if a.plain { "the plain network" } else { "FractalNet" },
        kind.name(),
        data.train.len(),
        data.val.as_ref().map_or(0, |v| v.len()),
        st.params,
        cfg.depth(),
        b.name()
    );

    let run_meta = std::collections::BTreeMap::from([(
        RUN_KEY.to_string(),
        json!({"dataset": kind.name(), "val": a.val, "seed": a.seed, "train_subset": a.train_subset}).to_string(),
    )]);
    let mut state = TrainState::new(a.seed);
    let metrics_path = out.join("metrics.jsonl");
    let total_start = std::time::Instant::now();
    for _ in 0..recipe.epochs {
        let epoch = state.epoch;
        let lr = recipe.lr_at(epoch);
        let bar = ProgressBar::new(data.train.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, recipe.epochs));
        let start = std::time::Instant::now();
        let tot = train::train_epoch(&b, &mut net, &mut sgd, &recipe, &data, &mut state, |done, loss, acc| {
            bar.set_position(done as u64);
            bar.set_message(format!("loss {loss:.4} acc {:.2}%", acc * 100.0));
        })?;
        let train_secs = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        train::calibrate(&b, &mut net, &data.train, &data.mean, &data.std, recipe.bn_calib, recipe.batch_size, recipe.seed)?;
        let (mut val_loss, mut val_acc, mut val_cols, mut val_col_loss) = (None, None, None, None);
        if let Some(v) = &data.val {
            let full_stats = net.stats_for(None);
            let full = train::evaluate(&b, &mut net, v, &data.mean, &data.std, &KeepMask::all(&cfg), full_stats, recipe.batch_size, None)?;
            let mut accs = Vec::new();
            let mut losses = Vec::new();
            for g in 0..cfg.columns {
                let m = KeepMask::column(&cfg, g)?;
                let s = net.stats_for(Some(g));
                let e = train::evaluate(&b, &mut net, v, &data.mean, &data.std, &m, s, recipe.batch_size, None)?;
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
            seconds: start.elapsed().as_secs_f64(),
            images_per_s: tot.seen as f64 / train_secs,
        };
        append_line(&metrics_path, &serde_json::to_string(&m).unwrap_or_default())?;
        save_tensors(&out.join("model.safetensors"), &b, &net.params, &meta, &run_meta, |_| true)?;
        let cols = val_cols
            .map(|v| v.iter().map(|a| format!("{:.2}", a * 100.0)).collect::<Vec<_>>().join(" / "))
            .unwrap_or_default();
        println!(
            "epoch {:>3}/{} lr {:.4} train loss {:.4} acc {:.2}% | val {} | columns {} | {:.0} img/s, {:.0}s",
            epoch + 1,
            recipe.epochs,
            lr,
            m.train_loss,
            m.train_acc * 100.0,
            val_acc.map(|a| format!("{:.2}%", a * 100.0)).unwrap_or_else(|| "-".into()),
            if cols.is_empty() { "-".into() } else { cols },
            m.images_per_s,
            m.seconds
        );
    }
    println!("done in {:.0}s; model in {}", total_start.elapsed().as_secs_f64(), out.join("model.safetensors").display());
    Ok(())
}

pub fn write_text(path: &Path, s: &str) -> CliResult<()> {
    std::fs::write(path, s).map_err(|e| Error::io(path, e).into())
}

fn append_line(path: &Path, line: &str) -> CliResult<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))?;
    f.sync_data().map_err(|e| Error::io(path, e).into())
}
