//! Whole-network benchmarks: `cargo bench --bench train_step`.
//!
//! One training step = forward (training mode) + softmax cross-entropy + backward + SGD with
//! momentum, on the CIFAR-shaped network (32x32x3 input, channels 16, 32, 64, 128, 128,
//! 10 classes, no dropout). Throughput is in images, so criterion's "elements/s" is images/s.
//! Every timed closure ends with `b.sync()` (a no-op on the CPU).

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use fractalnet::backend::{Backend, Cpu};
use fractalnet::gradcheck::random_tensor;
use fractalnet::model::{Network, Sgd, StatsSel};
use fractalnet::plan::{DropPath, FractalConfig, KeepMask};
use fractalnet::rng::SeededRng;
use fractalnet::tensor::Tensor;
use std::hint::black_box;
use std::time::Duration;

const CHANNELS: [usize; 5] = [16, 32, 64, 128, 128];
const CLASSES: usize = 10;

fn unwrap<T>(r: fractalnet::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("bench step failed: {e}"))
}

fn config(columns: usize) -> FractalConfig {
    FractalConfig::new(columns, CHANNELS.to_vec(), 3, CLASSES)
}

/// A random batch of `n` images and labels 0..K cycling.
fn batch<B: Backend>(b: &B, n: usize, seed: u64) -> (Tensor<B>, Tensor<B>) {
    let x = random_tensor(b, [n, 3, 32, 32], seed);
    let labels: Vec<f32> = (0..n).map(|i| (i % CLASSES) as f32).collect();
    (x, unwrap(b.from_host([n].into(), &labels)))
}

/// Which keep-mask each training step runs under.
#[derive(Clone, Copy)]
enum Masks {
    AllPaths,
    /// A fresh `DropPath::PAPER` sample per step, from a seeded stream.
    DropPathMix,
}

fn bench_train_step<B: Backend>(
    c: &mut Criterion,
    b: &B,
    dev: &str,
    columns: usize,
    n: usize,
    masks: Masks,
) {
    let cfg = config(columns);
    let mut net = unwrap(Network::new(b, &cfg, 1));
    let mut sgd = unwrap(Sgd::new(b, &net.params, 0.02, 0.9, 5e-4));
    let (x, labels) = batch(b, n, 2);
    let all = KeepMask::all(&cfg);
    let mut rng = SeededRng::new(3);
    let mut step = 0u64;
    let variant = match masks {
        Masks::AllPaths => "all_paths",
        Masks::DropPathMix => "droppath_mix",
    };
    let mut g = c.benchmark_group(format!("{dev}/train_step"));
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("c{columns}_b{n}_{variant}"), |bch| {
        bch.iter(|| {
            step += 1;
            let sampled;
            let mask = match masks {
                Masks::AllPaths => &all,
                Masks::DropPathMix => {
                    sampled = DropPath::PAPER.sample(&cfg, &mut rng).0;
                    &sampled
                }
            };
            black_box(unwrap(net.train_step(b, &x, &labels, mask, step, &mut sgd)));
            unwrap(b.sync());
        });
    });
    g.finish();
}

fn bench_eval<B: Backend>(c: &mut Criterion, b: &B, dev: &str, columns: usize, n: usize) {
    let cfg = config(columns);
    let mut net = unwrap(Network::new(b, &cfg, 1));
    let (x, _) = batch(b, n, 4);
    let all = KeepMask::all(&cfg);
    let mut g = c.benchmark_group(format!("{dev}/eval"));
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("c{columns}_b{n}_full"), |bch| {
        bch.iter(|| {
            black_box(unwrap(net.predict(b, &x, &all, StatsSel::Running)));
            unwrap(b.sync());
        });
    });
    g.finish();
}

fn benches_on<B: Backend>(c: &mut Criterion, b: &B, dev: &str) {
    bench_train_step(c, b, dev, 3, 50, Masks::AllPaths);
    bench_train_step(c, b, dev, 3, 50, Masks::DropPathMix);
    bench_train_step(c, b, dev, 4, 50, Masks::AllPaths);
    bench_eval(c, b, dev, 3, 100);
}

fn benches(c: &mut Criterion) {
    benches_on(c, &Cpu::new(), "cpu");
    // Vulkan side by side, on the first device (a GPU if there is one; lavapipe here, which is
    // for correctness and runs at about 1 GFLOP/s). FRACTALNET_BENCH_DEVICES=cpu skips it.
    if std::env::var("FRACTALNET_BENCH_DEVICES").map_or(true, |d| d.contains("vulkan")) {
        match fractalnet::backend::vulkan::Vulkan::new(None) {
            Ok(v) => benches_on(c, &v, "vulkan"),
            Err(e) => eprintln!("vulkan benches skipped: {e}"),
        }
    }
}

// No HTML charts: this crate's plotters is built with ab_glyph (fonts loaded at run time,
// see src/cli/chart.rs), and criterion's charts would then fail for want of a font.
criterion_group! {
    name = g;
    config = Criterion::default().without_plots();
    targets = benches
}
criterion_main!(g);
