//! `fractalnet plot RUN_DIR`: the learning curves of a run from RUN_DIR/metrics.jsonl, as in
//! the paper's Figure 3: loss (training, and validation of the full network and of each
//! column) and accuracy (validation of the full network and of each column, and training)
//! per epoch.

use super::chart::{self, Panel, Series};
use super::{CliError, CliResult};
use fractalnet::train::EpochMetrics;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// A run directory written by `fractalnet train` (it holds metrics.jsonl).
    run_dir: PathBuf,
    /// The chart file, .png or .svg (default RUN_DIR/curves.png).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: PlotArgs) -> CliResult<()> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.run_dir.join("curves.png"));
    chart::check_path(&out)?;
    let path = a.run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Lib(fractalnet::Error::io(&path, e)))?;
    let mut epochs: Vec<EpochMetrics> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let m = serde_json::from_str(line)
            .map_err(|e| CliError::Usage(format!("{}: line {}: {e}", path.display(), i + 1)))?;
        epochs.push(m);
    }
    if epochs.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: no epochs recorded yet",
            path.display()
        )));
    }
    let ep = |m: &EpochMetrics| m.epoch as f64;
    let series = |name: String, f: &dyn Fn(&EpochMetrics) -> Option<f64>| {
        Series::new(
            name,
            epochs
                .iter()
                .filter_map(|m| f(m).map(|v| (ep(m), v)))
                .collect(),
        )
    };
    let columns = epochs
        .iter()
        .filter_map(|m| m.val_acc_columns.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);

    let mut loss = vec![series("validation, full network".into(), &|m| m.val_loss)];
    for c in 0..columns {
        loss.push(series(format!("validation, column {c}"), &|m| {
            m.val_loss_columns.as_ref().and_then(|v| v.get(c).copied())
        }));
    }
    let mut train_loss = series("training (drop-path)".into(), &|m| Some(m.train_loss));
    train_loss.dashed = true;
    loss.push(train_loss);

    let mut acc = vec![series("validation, full network".into(), &|m| {
        m.val_acc.map(|v| v * 100.0)
    })];
    for c in 0..columns {
        acc.push(series(format!("validation, column {c}"), &|m| {
            m.val_acc_columns
                .as_ref()
                .and_then(|v| v.get(c))
                .map(|v| v * 100.0)
        }));
    }
    let mut train_acc = series("training (drop-path)".into(), &|m| {
        Some(m.train_acc * 100.0)
    });
    train_acc.dashed = true;
    acc.push(train_acc);
    // Without a validation split only the training curves have points.
    loss.retain(|s| !s.points.is_empty());
    acc.retain(|s| !s.points.is_empty());

    let run = a.run_dir.display();
    // One tick per epoch for short runs (plotters would label fractions of an epoch).
    let span = epochs.iter().map(|m| m.epoch).max().unwrap_or(1)
        - epochs.iter().map(|m| m.epoch).min().unwrap_or(0);
    let ticks = (span + 1).min(12);
    let panels = [
        Panel {
            title: format!("loss: {run}"),
            x_desc: "epoch".into(),
            y_desc: "cross-entropy loss".into(),
            series: loss,
            vline: None,
            legend_lower: false,
            x_ticks: Some(ticks),
        },
        Panel {
            title: format!("accuracy: {run}"),
            x_desc: "epoch".into(),
            y_desc: "accuracy (%)".into(),
            series: acc,
            vline: None,
            legend_lower: true,
            x_ticks: Some(ticks),
        },
    ];
    chart::draw(&out, &panels)?;
    println!(
        "{} epochs, {columns} columns -> {}",
        epochs.len(),
        out.display()
    );
    Ok(())
}
