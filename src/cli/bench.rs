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
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: usize,
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
    let mut net = match &a.checkpoint {
        Some(p) => load_model(p, b)?.0,
        None => {
            let ch: Vec<usize> = parse_list("--channels", &a.channels)?;
            let mut cfg = FractalConfig::new(a.columns, ch, a.in_channels, a.classes);
            cfg.blocks = cfg.channels.len();
            Network::new(b, &cfg, 0)?
        }
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
    let eval_mask = match a.column {
        Some(c) => KeepMask::column(&cfg, c)?,
        None => KeepMask::all(&cfg),
    };
    let st = stats(&net.plan, n);
    let mut flops = 0f64;
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
                }
                let (loss, _) = net.train_step(b, &x, &y, &mask, rng.next_u64(), &mut sgd)?;
                b.to_host(&loss)?;
            }
            BenchMode::Eval => {
                let stats_sel = net.stats_for(a.column);
                let l = net
                    .forward(b, &x, &eval_mask, Mode::Eval { stats: stats_sel })?
                    .logits;
                b.to_host(&l)?;
                if count {
                    flops += (if a.column.is_some() {
                        st.column_flops_per_image[a.column.unwrap_or(0)]
                    } else {
                        st.flops_per_image
                    }) as f64
                        * n as f64;
                }
            }
        }
        Ok(())
    };
    for _ in 0..2 {
        step(&mut net, false)?;
    }
    b.sync()?;
    let base = alloc::live();
    alloc::reset_peak();
    let start = Instant::now();
    for _ in 0..a.steps {
        step(&mut net, true)?;
    }
    b.sync()?;
    let secs = start.elapsed().as_secs_f64();
    let peak = alloc::peak().saturating_sub(base);
    let ms = secs * 1e3 / a.steps as f64;
    let ips = (a.steps * n) as f64 / secs;
    let gflops = flops / secs / 1e9;
    if a.json {
        println!(
            "{}",
            json!({
                "images_per_s": ips, "ms_per_step": ms, "gflops": gflops, "peak_step_bytes": peak,
                "mode": format!("{:?}", a.mode).to_lowercase(), "batch_size": n, "columns": cfg.columns,
                "steps": a.steps, "device": b.name(),
            })
        );
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
