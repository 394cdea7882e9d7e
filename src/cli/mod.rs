//! Subcommands. Each parses its flags into library types and prints; errors are one line.

pub mod alloc;
mod anytime;
mod arch;
mod bench;
mod chart;
pub mod device;
mod eval;
mod info;
mod plot;
mod train;

use clap::{Parser, Subcommand};
use fractalnet::Error;

#[derive(Parser)]
#[command(
    name = "fractalnet",
    version,
    about = "Train, evaluate and deploy FractalNet image classifiers on CPUs and Vulkan GPUs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Parameter count, depth, FLOPs and training memory of a network configuration.
    Info(info::InfoArgs),
    /// Train a network on an image data set (the paper's recipe by default).
    Train(train::TrainArgs),
    /// Accuracy and loss of a model file: full network, one column, or every column.
    Eval(eval::EvalArgs),
    /// List the Vulkan devices (`--device vulkan:N` picks one).
    Devices(device::DevicesArgs),
    /// Time training steps or inference on synthetic input.
    Bench(bench::BenchArgs),
    /// Re-estimate BN statistics of a model file (full network and every column).
    Calibrate(eval::CalibrateArgs),
    /// Every column and the full network: depth, parameters, latency, accuracy; the best
    /// within a latency deadline; the accuracy-versus-latency curve.
    Anytime(anytime::AnytimeArgs),
    /// Learning curves of a run (RUN_DIR/metrics.jsonl) as a .png or .svg chart.
    Plot(plot::PlotArgs),
}

/// An error of the command line: a library error, or bad usage.
#[derive(Debug)]
pub enum CliError {
    Lib(Error),
    Usage(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Lib(e) => write!(f, "{e}"),
            CliError::Usage(s) => write!(f, "{s}"),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Lib(e)
    }
}

impl CliError {
    /// 2 for bad input (flags, files, configs), 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Lib(e) => match e {
                Error::Backend { .. } | Error::Diverged { .. } => 1,
                _ => 2,
            },
        }
    }
}

pub type CliResult<T> = std::result::Result<T, CliError>;

pub fn run(cli: Cli) -> CliResult<()> {
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Devices(a) => device::devices(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Calibrate(a) => eval::calibrate(a),
        Command::Anytime(a) => anytime::run(a),
        Command::Plot(a) => plot::run(a),
    }
}

/// Parses "16,32,64" into a list.
pub fn parse_list<T: std::str::FromStr>(flag: &str, s: &str) -> CliResult<Vec<T>> {
    s.split(',')
        .map(|p| {
            p.trim().parse::<T>().map_err(|_| {
                CliError::Usage(format!("{flag}: '{p}' in '{s}' is not a valid number"))
            })
        })
        .collect()
}

/// Parses "32,32" (or "32") into [H, W].
pub fn parse_hw(s: &str) -> CliResult<[usize; 2]> {
    let v: Vec<usize> = parse_list("--input-hw", s)?;
    match v[..] {
        [h] => Ok([h, h]),
        [h, w] => Ok([h, w]),
        _ => Err(CliError::Usage(format!(
            "--input-hw: expected H,W, got '{s}'"
        ))),
    }
}
