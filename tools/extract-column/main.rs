//! `extract-column --checkpoint F --column c --out G [--fold-bn]`: writes column c of a
//! trained FractalNet alone (its layers and the classifier, with its own calibrated BatchNorm
//! statistics as the running ones), optionally with BatchNorm folded into the convolutions.
//! `fractalnet eval --checkpoint G` evaluates the result directly; see
//! `fractalnet::model::extract` for the format.

use clap::Parser;
use fractalnet::backend::Cpu;
use fractalnet::checkpoint;
use fractalnet::model::extract::{extract_column, fold_bn, used_params};
use fractalnet::model::io::{RUN_KEY, load_from_raw, save_tensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "extract-column",
    version,
    about = "Cut one column out of a trained FractalNet model file"
)]
struct Args {
    /// A full model file (model.safetensors, best.safetensors or a training checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The column to keep: 0 (shallowest, 1 layer per block) to C-1 (deepest).
    #[arg(long)]
    column: usize,
    /// Where to write the extracted model (atomically).
    #[arg(long)]
    out: PathBuf,
    /// Fold each BatchNorm into its convolution (conv + bias -> ReLU; inference only).
    #[arg(long)]
    fold_bn: bool,
}

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return;
        }
        Err(e) => {
            // One line: clap's first paragraph (it names the missing or bad flag).
            let msg = e.to_string();
            let first: Vec<&str> = msg
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{} (see --help)", first.join(" "));
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn file_size(p: &Path) -> Result<u64, String> {
    std::fs::metadata(p)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", p.display()))
}

fn run(a: &Args) -> Result<(), String> {
    let same = match (a.checkpoint.canonicalize(), a.out.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if same {
        return Err(format!(
            "--out {} is the --checkpoint file; write the column to a new file",
            a.out.display()
        ));
    }
    let b = Cpu::with_threads(0);
    let raw = checkpoint::read(&a.checkpoint).map_err(|e| e.to_string())?;
    if !raw.metadata.contains_key(fractalnet::model::io::CONFIG_KEY) {
        return Err(format!(
            "{}: not a FractalNet model file (no {} metadata)",
            a.checkpoint.display(),
            fractalnet::model::io::CONFIG_KEY
        ));
    }
    let (net, meta) = load_from_raw(&raw, &b).map_err(|e| e.to_string())?;
    let lib = |e: fractalnet::Error| format!("{}: {e}", a.checkpoint.display());
    let mut out = extract_column(&net, &meta, a.column).map_err(lib)?;
    if a.fold_bn {
        out = fold_bn(&b, &out.params, &out.meta).map_err(lib)?;
    }
    // Keep the run's metadata, so that `eval --split val` rebuilds the same split.
    let extra: BTreeMap<String, String> = raw
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() == RUN_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    save_tensors(&a.out, &b, &out.params, &out.meta, &extra, |_| true)
        .map_err(|e| e.to_string())?;
    let before = (used_params(&net.plan, None), file_size(&a.checkpoint)?);
    let after = (out.params.trainable_count(), file_size(&a.out)?);
    let cfg = &meta.config;
    println!(
        "column {} of {} ({} layers deep{}) -> {}",
        a.column,
        cfg.columns,
        cfg.blocks * cfg.column_layers(a.column),
        if a.fold_bn { ", BatchNorm folded" } else { "" },
        a.out.display()
    );
    println!("parameters  {:>12} -> {:>12}", before.0, after.0);
    println!("file bytes  {:>12} -> {:>12}", before.1, after.1);
    Ok(())
}
