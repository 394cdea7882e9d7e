use super::alloc;
use super::{CliError, CliResult, parse_list};
use fractalnet::Shape;
use fractalnet::backend::Backend;
use fractalnet::gradcheck::random_vec;
use fractalnet::model::io::load_model;
use fractalnet::model::stats::stats;
use fractalnet::model::{Mode, Network, Sgd};
use fractalnet::plan::{DropPath, FractalConfig, KeepMask};
use fractalnet::rng::SeededRng;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    Train,
    Eval,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchDropPath {
    /// A new paper-mix sample (50% global, 50% local p = 0.15) every step.
    Mix,
    /// Every path, every step.
    None,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 3)]
    columns: usize,
    #[arg(long, default_value = "16,32,64,128,128")]
    channels: String,
    #[arg(long, default_value_t = 10)]
    classes: usize,
    #[arg(long, default_value_t = 3)]
    in_channels: usize,
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    #[arg(long, value_enum, default_value = "train")]
    mode: BenchMode,
    #[arg(long, value_enum, default_value = "mix")]
    drop_path: BenchDropPath,
    /// Evaluate column c alone (eval mode).
    #[arg(long)]
    column: Option<usize>,
    /// Time a model file instead of a fresh network (eval mode).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Timed steps (after the warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps before the timed ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// cpu, vulkan, vulkan:N, or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: BenchArgs) -> CliResult<()> {
    if a.steps == 0 || a.batch_size == 0 {
        return Err(CliError::Usage(
            "--steps and --batch-size must be at least 1".into(),
        ));
    }
    let (device, threads) = (a.device.clone(), a.threads);
    super::device::dispatch(&device, threads, a)
}

impl super::device::OnBackend for BenchArgs {
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        bench_on(b, self)
    }
}

fn bench_on<B: Backend>(b: &B, a: BenchArgs) -> CliResult<()> {
    let (mut net, file_column) = match &a.checkpoint {
        Some(p) => {
            let (net, meta) = load_model(p, b)?;
            (net, meta.column)
        }
        None => {
            let ch: Vec<usize> = parse_list("--channels", &a.channels)?;
            let mut cfg = FractalConfig::new(a.columns, ch, a.in_channels, a.classes);
            cfg.blocks = cfg.channels.len();
            (Network::new(b, &cfg, 0)?, None)
        }
    };
    // An extracted file holds one column: time that column (as `eval` does), not the full
    // network with the other columns at their initial values.
    let column = match (a.column, file_column) {
        (Some(c), Some(fc)) if c != fc => {
            return Err(CliError::Usage(format!(
                "--column {c}: the checkpoint holds only column {fc}"
            )));
        }
        (c, fc) => c.or(fc),
    };
    let cfg = net.config().clone();
    let n = a.batch_size;
    let x = b.from_host(
        Shape::new([n, cfg.in_channels, cfg.input_hw[0], cfg.input_hw[1]]),
        &random_vec(n * cfg.in_channels * cfg.input_hw[0] * cfg.input_hw[1], 1),
    )?;
    let labels: Vec<f32> = (0..n).map(|i| (i % cfg.classes) as f32).collect();
    let y = b.from_host(Shape::new([n]), &labels)?;
    let mut sgd = Sgd::new(b, &net.params, 0.01, 0.9, 0.0)?;
    let mut rng = SeededRng::new(0);
    let eval_mask = match column {
        Some(c) => KeepMask::column(&cfg, c)?,
        None => KeepMask::all(&cfg),
    };
    let st = stats(&net.plan, n);
    let mut flops = 0f64;
    // The drop-path masks of the timed steps (train mode, --drop-path mix), so that another
    // engine can replay exactly the same sub-networks (tools/compare-pytorch).
    let mut masks: Vec<String> = Vec::new();
    let mut step = |net: &mut Network<B>, count: bool| -> CliResult<()> {
        match a.mode {
            BenchMode::Train => {
                let mask = match a.drop_path {
                    BenchDropPath::Mix => DropPath::PAPER.sample(&cfg, &mut rng).0,
                    BenchDropPath::None => KeepMask::all(&cfg),
                };
                if count {
                    // forward + backward ~ 3x the forward FLOPs of the live layers
                    let live = net.plan.liveness(&mask)?;
                    let f: usize = live
                        .live_units(&net.plan)
                        .iter()
                        .map(|&u| {
                            let u = &net.plan.units[u];
                            2 * u.cin * 9 * u.cout * u.hw[0] * u.hw[1]
                        })
                        .sum::<usize>()
                        + 2 * net.plan.features * cfg.classes;
                    flops += 3.0 * f as f64 * n as f64;
                    if a.drop_path == BenchDropPath::Mix {
                        masks.push(
                            mask.keep
                                .iter()
                                .map(|&k| if k { '1' } else { '0' })
                                .collect(),
                        );
                    }
                }
                let (loss, _) = net.train_step(b, &x, &y, &mask, rng.next_u64(), &mut sgd)?;
                b.to_host(&loss)?;
            }
            BenchMode::Eval => {
                let stats_sel = net.stats_for(column);
                let l = net
                    .forward(b, &x, &eval_mask, Mode::Eval { stats: stats_sel })?
                    .logits;
                b.to_host(&l)?;
                if count {
                    flops += (if let Some(c) = column {
                        st.column_flops_per_image[c]
                    } else {
                        st.flops_per_image
                    }) as f64
                        * n as f64;
                }
            }
        }
        Ok(())
    };
    // Resident memory once the network, optimiser state and input exist (Linux only): with
    // --warmup 0 --steps 1, peak_rss_bytes - rss_before_steps_bytes is the peak of one step.
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so that the
    // set-up before this point does not count.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = proc_status_bytes("VmRSS");
    for _ in 0..a.warmup {
        step(&mut net, false)?;
    }
    b.sync()?;
    let base = alloc::live();
    alloc::reset_peak();
    let mut step_ms = Vec::with_capacity(a.steps);
    let start = Instant::now();
    for _ in 0..a.steps {
        let t = Instant::now();
        step(&mut net, true)?;
        b.sync()?;
        step_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    b.sync()?;
    let secs = start.elapsed().as_secs_f64();
    let peak_rss = proc_status_bytes("VmHWM");
    let peak = alloc::peak().saturating_sub(base);
    let ms = secs * 1e3 / a.steps as f64;
    let ips = (a.steps * n) as f64 / secs;
    let gflops = flops / secs / 1e9;
    if a.json {
        let mut v = json!({
            "images_per_s": ips, "ms_per_step": ms, "gflops": gflops, "peak_step_bytes": peak,
            "mode": format!("{:?}", a.mode).to_lowercase(), "batch_size": n, "columns": cfg.columns,
            "steps": a.steps, "device": b.name(),
            "warmup": a.warmup, "step_ms": step_ms,
        });
        if let (Some(before), Some(hwm)) = (rss_before, peak_rss) {
            v["rss_before_steps_bytes"] = json!(before);
            v["peak_rss_bytes"] = json!(hwm);
        }
        if !masks.is_empty() {
            // keep[b, j, c] in row-major order, '1' = kept (shared/SPEC.md).
            v["mask_shape"] = json!([cfg.blocks, cfg.joins_per_block(), cfg.columns]);
            v["masks"] = json!(masks);
        }
        println!("{v}");
    } else {
        println!(
            "{} C={} batch {}: {:.1} images/s, {:.2} ms/step, {:.1} GFLOP/s, peak memory of a step {:.1} MiB (on {})",
            match a.mode {
                BenchMode::Train => "train",
                BenchMode::Eval => "eval",
            },
            cfg.columns,
            n,
            ips,
            ms,
            gflops,
            peak as f64 / (1 << 20) as f64,
            b.name()
        );
    }
    Ok(())
}

/// A `VmRSS` / `VmHWM` (kB) line of /proc/self/status in bytes; `None` off Linux.
fn proc_status_bytes(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}
