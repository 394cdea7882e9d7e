//! `fractalnet anytime`: the anytime property measured. One row per column (and the full
//! network): depth, trainable parameters used, latency per image at batch 1 and batch 100,
//! accuracy on the test split; with `--deadline-ms T`, the most accurate row whose batch-1
//! latency fits; with `--plot`, the accuracy-versus-latency curve.

use super::chart::{self, Panel, Series};
use super::info::group;
use super::{CliError, CliResult};
use fractalnet::backend::Backend;
use fractalnet::data::{self, DatasetKind, Split};
use fractalnet::model::extract::used_params;
use fractalnet::model::io::load_model;
use fractalnet::model::{Network, StatsSel};
use fractalnet::plan::KeepMask;
use fractalnet::train::{self, make_batch};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct AnytimeArgs {
    /// A model file: a full network (every column and the full network are measured) or an
    /// extracted column (that column only).
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    dataset: String,
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    label: Option<String>,
    /// Pick the most accurate row whose latency per image at batch 1 is at most T ms.
    #[arg(long)]
    deadline_ms: Option<f64>,
    /// Timed runs per latency figure (the median is reported), after --warmup runs.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Draw accuracy against batch-1 latency into this .png or .svg file.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, vulkan, vulkan:N, or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// The large batch of the second latency figure (fewer when the test set is smaller).
const BIG_BATCH: usize = 100;

#[derive(Clone, Debug, Serialize)]
struct Row {
    /// "column c" or "full network".
    what: String,
    column: Option<usize>,
    /// Layers on the longest path.
    depth: usize,
    /// Trainable parameters the row's sub-network uses.
    params: usize,
    /// Median wall time of one forward pass of one image, in ms (logits back on the host).
    ms_per_image_batch1: f64,
    /// Median wall time of one forward pass of `big_batch` images, divided by `big_batch`.
    ms_per_image_big_batch: f64,
    big_batch: usize,
    accuracy: f64,
    loss: f64,
}

pub fn run(a: AnytimeArgs) -> CliResult<()> {
    if a.runs == 0 {
        return Err(CliError::Usage("--runs must be at least 1".into()));
    }
    if let Some(t) = a.deadline_ms
        && !(t.is_finite() && t > 0.0)
    {
        return Err(CliError::Usage(format!(
            "--deadline-ms {t} must be a positive number of milliseconds"
        )));
    }
    if let Some(p) = &a.plot {
        chart::check_path(p)?;
    }
    let (device, threads) = (a.device.clone(), a.threads);
    super::device::dispatch(&device, threads, a)
}

impl super::device::OnBackend for AnytimeArgs {
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        anytime_on(b, self)
    }
}

/// Median wall time in ms of `runs` forward passes on `x` (after `warmup` untimed ones).
fn latency<B: Backend>(
    b: &B,
    net: &mut Network<B>,
    x: &fractalnet::Tensor<B>,
    mask: &KeepMask,
    stats: StatsSel,
    warmup: usize,
    runs: usize,
) -> CliResult<f64> {
    let once = |net: &mut Network<B>| -> CliResult<f64> {
        let t = Instant::now();
        let logits = net.predict(b, x, mask, stats)?;
        b.to_host(&logits)?; // waits for the device
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..warmup {
        once(net)?;
    }
    let mut times = (0..runs)
        .map(|_| once(net))
        .collect::<CliResult<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn anytime_on<B: Backend>(b: &B, a: AnytimeArgs) -> CliResult<()> {
    let (mut net, meta) = load_model(&a.checkpoint, b)?;
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
    let images = data::load(kind, &a.data_dir, Split::Test)?;
    let (mean, std) = (&meta.input_mean, &meta.input_std);
    let big = BIG_BATCH.min(images.len());
    let idx: Vec<usize> = (0..big).collect();
    let (x1, _) = make_batch(b, &images, &idx[..1], mean, std, None)?;
    let (xb, _) = make_batch(b, &images, &idx, mean, std, None)?;
    let mut targets: Vec<Option<usize>> = match meta.column {
        Some(c) => vec![Some(c)],
        None => (0..cfg.columns).map(Some).collect(),
    };
    if meta.column.is_none() && cfg.columns > 1 {
        targets.push(None);
    }
    let mut rows = Vec::new();
    for column in targets {
        let mask = match column {
            Some(c) => KeepMask::column(&cfg, c)?,
            None => KeepMask::all(&cfg),
        };
        let stats = net.stats_for(column);
        let t1 = latency(b, &mut net, &x1, &mask, stats, a.warmup, a.runs)?;
        let tb = latency(b, &mut net, &xb, &mask, stats, a.warmup, a.runs)? / big as f64;
        let e = train::evaluate(
            b, &mut net, &images, mean, std, &mask, stats, BIG_BATCH, None,
        )?;
        rows.push(Row {
            what: column.map_or("full network".into(), |c| format!("column {c}")),
            column,
            depth: column.map_or(cfg.depth(), |c| cfg.blocks * cfg.column_layers(c)),
            params: used_params(&net.plan, column),
            ms_per_image_batch1: t1,
            ms_per_image_big_batch: tb,
            big_batch: big,
            accuracy: e.accuracy,
            loss: e.loss,
        });
    }
    // Most accurate within the deadline; the faster on a tie.
    let choice = a.deadline_ms.and_then(|t| {
        rows.iter()
            .filter(|r| r.ms_per_image_batch1 <= t)
            .max_by(|x, y| {
                x.accuracy
                    .total_cmp(&y.accuracy)
                    .then(y.ms_per_image_batch1.total_cmp(&x.ms_per_image_batch1))
            })
            .cloned()
    });
    if let Some(path) = &a.plot {
        let cols: Vec<&Row> = rows.iter().filter(|r| r.column.is_some()).collect();
        let mut columns = Series::new(
            "columns",
            cols.iter()
                .map(|r| (r.ms_per_image_batch1, r.accuracy * 100.0))
                .collect(),
        );
        columns.point_labels = cols
            .iter()
            .map(|r| format!(" col {} ({} layers)", r.column.unwrap_or(0), r.depth))
            .collect();
        let mut series = vec![columns];
        if let Some(full) = rows.iter().find(|r| r.column.is_none()) {
            let mut s = Series::new(
                "full network",
                vec![(full.ms_per_image_batch1, full.accuracy * 100.0)],
            );
            s.point_labels = vec![format!(" full ({} layers)", full.depth)];
            series.push(s);
        }
        let panel = Panel {
            title: format!(
                "anytime: {} ({} on {})",
                a.checkpoint
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                kind.name(),
                b.name()
            ),
            x_desc: "latency per image at batch 1 (ms)".into(),
            y_desc: "test accuracy (%)".into(),
            series,
            vline: a.deadline_ms.map(|t| (t, format!(" deadline {t} ms"))),
            legend_lower: true,
            x_ticks: None,
        };
        chart::draw(path, &[panel])?;
    }
    if a.json {
        let v = serde_json::json!({
            "checkpoint": a.checkpoint.display().to_string(),
            "device": b.name(),
            "test_images": images.len(),
            "rows": rows,
            "deadline_ms": a.deadline_ms,
            "choice": choice,
        });
        println!("{v}");
    } else {
        println!(
            "anytime inference of {} on {} ({} test images, {})",
            a.checkpoint.display(),
            kind.name(),
            images.len(),
            b.name()
        );
        println!(
            "{:<14} {:>6} {:>12} {:>14} {:>16} {:>9}",
            "",
            "depth",
            "parameters",
            "ms/image @1",
            format!("ms/image @{big}"),
            "accuracy"
        );
        for r in &rows {
            println!(
                "{:<14} {:>6} {:>12} {:>14.4} {:>16.4} {:>8.2}%",
                r.what,
                r.depth,
                group(r.params),
                r.ms_per_image_batch1,
                r.ms_per_image_big_batch,
                r.accuracy * 100.0
            );
        }
        if let Some(t) = a.deadline_ms {
            match &choice {
                Some(r) => println!(
                    "deadline {t} ms: {} ({:.2}%, {:.4} ms per image at batch 1)",
                    r.what,
                    r.accuracy * 100.0,
                    r.ms_per_image_batch1
                ),
                None => {
                    let fastest = rows
                        .iter()
                        .min_by(|x, y| x.ms_per_image_batch1.total_cmp(&y.ms_per_image_batch1));
                    let f = fastest
                        .map(|r| {
                            format!(
                                "; the fastest, {}, takes {:.4} ms",
                                r.what, r.ms_per_image_batch1
                            )
                        })
                        .unwrap_or_default();
                    println!("deadline {t} ms: nothing fits{f}");
                }
            }
        }
        if let Some(p) = &a.plot {
            println!("plot: {}", p.display());
        }
    }
    Ok(())
}
