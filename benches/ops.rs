//! Per-op benchmarks: `cargo bench --bench ops`.
//!
//! Names are `<device>/<op>/<case>`. Every timed closure ends with `b.sync()` so that a GPU
//! backend is timed to completion rather than to submission (a no-op on the CPU).
//!
//! Throughput: for the GEMMs and convolutions it is `Throughput::Elements(FLOPs)`, so the
//! "elements/s" criterion prints ARE FLOP/s (one multiply-add = 2 FLOPs). For memory-bound
//! ops it is the number of activation elements (or parameters) processed per call.

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use fractalnet::backend::{Backend, Cpu};
use fractalnet::gradcheck::random_tensor;
use fractalnet::ops::batchnorm::EPS;
use fractalnet::ops::conv2d::Conv2dParams;
use fractalnet::ops::gemm::{MatRef, gemm_nt_acc, sgemm, sgemm_par};
use fractalnet::ops::pool::Pool2dParams;
use fractalnet::tensor::Tensor;
use std::hint::black_box;
use std::time::Duration;

/// conv3x3 (pad 1) shapes of the small FractalNet (channels 16, 32, 64, 128, 128), batch 50:
/// (H = W, Cin, Cout).
const CONV_CASES: [(usize, usize, usize); 4] =
    [(32, 3, 16), (32, 16, 16), (16, 32, 32), (8, 128, 128)];
const BATCH: usize = 50;

fn unwrap<T>(r: fractalnet::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("bench op failed: {e}"))
}

/// Square single-precision GEMM on the host: ours (`ops::gemm`) on one thread and cut over
/// rayon's pool (`sgemm_par`), beside `matrixmultiply` (the reference it is tested against)
/// on one thread and split into two row panels. Host-only, so not generic over the backend.
fn bench_sgemm(c: &mut Criterion) {
    #[derive(Clone, Copy)]
    enum Impl {
        Ours,
        OursPar,
        Mm,
        MmPar,
    }
    for (name, which) in [
        ("cpu/sgemm", Impl::Ours),
        ("cpu/sgemm_par", Impl::OursPar),
        ("cpu/sgemm_matrixmultiply", Impl::Mm),
        ("cpu/sgemm_matrixmultiply_par", Impl::MmPar),
    ] {
        let mut g = c.benchmark_group(name);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(3));
        for n in [256usize, 512, 1024, 2048] {
            if n >= 1024 {
                // 2048^3 is ~0.2 s per call on one core: fixed iteration counts, few samples.
                g.sampling_mode(SamplingMode::Flat).sample_size(10);
            } else {
                g.sampling_mode(SamplingMode::Auto).sample_size(30);
            }
            let a: Vec<f32> = fractalnet::gradcheck::random_vec(n * n, 1);
            let bm: Vec<f32> = fractalnet::gradcheck::random_vec(n * n, 2);
            let mut cm = vec![0.0f32; n * n];
            g.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
            g.bench_function(BenchmarkId::from_parameter(n), |bch| {
                bch.iter(|| {
                    let (am, bref) = (MatRef::rm(&a, n, n), MatRef::rm(&bm, n, n));
                    match which {
                        Impl::Ours => sgemm(1.0, am, bref, 0.0, &mut cm),
                        Impl::OursPar => sgemm_par(1.0, am, bref, 0.0, &mut cm),
                        Impl::Mm => matrixmultiply_sgemm(&a, &bm, &mut cm, n, n),
                        Impl::MmPar => {
                            let half = n / 2;
                            let (a0, a1) = a.split_at(half * n);
                            let (c0, c1) = cm.split_at_mut(half * n);
                            rayon::join(
                                || matrixmultiply_sgemm(a0, &bm, c0, half, n),
                                || matrixmultiply_sgemm(a1, &bm, c1, n - half, n),
                            );
                        }
                    }
                    black_box(&mut cm);
                });
            });
        }
        g.finish();
    }
}

/// c [m, n] = a [m, n] b [n, n], all row-major, by matrixmultiply.
fn matrixmultiply_sgemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize) {
    assert!(a.len() >= m * n && b.len() >= n * n && c.len() >= m * n);
    // SAFETY: the spans were checked just above.
    unsafe {
        matrixmultiply::sgemm(
            m,
            n,
            n,
            1.0,
            a.as_ptr(),
            n as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// The backend op set at FractalNet shapes. `dev` prefixes every name.
fn bench_backend_ops<B: Backend>(c: &mut Criterion, b: &B, dev: &str) {
    let conv = Conv2dParams::SAME3X3;
    for (group, with_backward) in [("conv3x3_fwd", false), ("conv3x3_fwd_bwd", true)] {
        let mut g = c.benchmark_group(format!("{dev}/{group}"));
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(3));
        g.sample_size(20);
        for (i, &(hw, cin, cout)) in CONV_CASES.iter().enumerate() {
            let seed = 10 * i as u64;
            let x = random_tensor(b, [BATCH, cin, hw, hw], seed);
            let w = random_tensor(b, [cout, cin, 3, 3], seed + 1);
            let dy = random_tensor(b, [BATCH, cout, hw, hw], seed + 2);
            let fwd_flops = 2 * (BATCH * cout * hw * hw * cin * 9) as u64;
            // backward = dx (w^T dy) + dw (dy col^T): two GEMMs of the forward's size.
            g.throughput(Throughput::Elements(if with_backward {
                3 * fwd_flops
            } else {
                fwd_flops
            }));
            let id = format!("{hw}x{hw}_{cin}to{cout}_b{BATCH}");
            g.bench_function(id, |bch| {
                bch.iter(|| {
                    let y = unwrap(b.conv2d_forward(&x, &w, conv));
                    if with_backward {
                        black_box(unwrap(b.conv2d_backward(&x, &w, &dy, conv, true)));
                    }
                    black_box(y);
                    unwrap(b.sync());
                });
            });
        }
        g.finish();
    }

    let mut g = c.benchmark_group(dev.to_string());
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    let act = [BATCH, 16, 32, 32];
    let act_n = act.iter().product::<usize>() as u64;

    {
        let x = random_tensor(b, act, 100);
        let dy = random_tensor(b, act, 101);
        let gamma = random_tensor(b, [16], 102);
        let beta = random_tensor(b, [16], 103);
        g.throughput(Throughput::Elements(act_n));
        g.bench_function("batchnorm_relu_train_fwd_bwd/50x16x32x32", |bch| {
            bch.iter(|| {
                let (y, stats) = unwrap(b.batchnorm_forward_train(&x, &gamma, &beta, EPS, true));
                black_box(unwrap(
                    b.batchnorm_backward(&x, &gamma, &stats, &y, &dy, EPS, true),
                ));
                unwrap(b.sync());
            });
        });
    }
    {
        let x = random_tensor(b, act, 110);
        let dy = random_tensor(b, [BATCH, 16, 16, 16], 111);
        g.throughput(Throughput::Elements(act_n));
        g.bench_function("maxpool2x2_fwd_bwd/50x16x32x32", |bch| {
            bch.iter(|| {
                black_box(unwrap(b.maxpool2d_forward(&x, Pool2dParams::HALVE)));
                black_box(unwrap(b.maxpool2d_backward(&x, &dy, Pool2dParams::HALVE)));
                unwrap(b.sync());
            });
        });
    }
    {
        let ins: Vec<Tensor<B>> = (0..3).map(|i| random_tensor(b, act, 120 + i)).collect();
        let refs: Vec<&Tensor<B>> = ins.iter().collect();
        g.throughput(Throughput::Elements(act_n));
        g.bench_function("join3_fwd/50x16x32x32", |bch| {
            bch.iter(|| {
                black_box(unwrap(b.join_forward(&refs)));
                unwrap(b.sync());
            });
        });
    }
    {
        let (n, f, k) = (BATCH, 128, 10);
        let x = random_tensor(b, [n, f], 130);
        let w = random_tensor(b, [k, f], 131);
        let bias = random_tensor(b, [k], 132);
        let dy = random_tensor(b, [n, k], 133);
        // forward + dx + dw: three GEMMs of 2 N F K FLOPs.
        g.throughput(Throughput::Elements(3 * 2 * (n * f * k) as u64));
        g.bench_function("linear_fwd_bwd/50x128to10", |bch| {
            bch.iter(|| {
                black_box(unwrap(b.linear_forward(&x, &w, &bias)));
                black_box(unwrap(b.linear_backward(&x, &w, &dy)));
                unwrap(b.sync());
            });
        });
    }
    {
        let logits = random_tensor(b, [BATCH, 10], 140);
        let labels: Vec<f32> = (0..BATCH).map(|i| (i % 10) as f32).collect();
        let labels = unwrap(b.from_host([BATCH].into(), &labels));
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function("softmax_xent/50x10", |bch| {
            bch.iter(|| {
                black_box(unwrap(b.softmax_xent(&logits, &labels)));
                unwrap(b.sync());
            });
        });
    }
    {
        let n = 1 << 20;
        let mut w = random_tensor(b, [n], 150);
        let grad = random_tensor(b, [n], 151);
        let mut v = unwrap(b.zeros(&[n].into()));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("sgd_update/1M", |bch| {
            bch.iter(|| {
                // lr * (1 / (1 - momentum)) * |g| stays small: w does not blow up over many calls.
                unwrap(b.sgd_update(&mut w, &grad, &mut v, 1e-4, 0.9, 5e-4));
                unwrap(b.sync());
            });
        });
    }
    g.finish();
}

/// The weight gradient's dot-product kernel (`gemm_nt_acc`, one thread): dW [Cout, 9 Cin] +=
/// dy [Cout, pixels] col^T, at the shapes of the training step (channels 16..128, batch 50:
/// the first block's 1-image groups, the 4x4 and 2x2 layers' groups of 12-13 images) and of
/// a 64..512 layer (Cout 128, Cin 128, 512 pixels per group). `FRACTALNET_NO_AVX512=1` times
/// the AVX2 kernel on the same CPU (on AMD Zen 4 it is the one used either way).
fn bench_nt_acc(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/gemm_nt_acc");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for (m, n, len) in [
        (16usize, 144usize, 1024usize),
        (128, 1152, 192),
        (128, 1152, 52),
        (128, 1152, 512),
    ] {
        let a: Vec<f32> = fractalnet::gradcheck::random_vec(m * len, 3);
        let b: Vec<f32> = fractalnet::gradcheck::random_vec(n * len, 4);
        let mut out = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * n * len) as u64));
        g.bench_function(format!("{m}x{n}x{len}"), |bch| {
            bch.iter(|| {
                gemm_nt_acc(m, n, len, &a, len, &b, len, &mut out, n);
                black_box(&mut out);
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_sgemm(c);
    bench_nt_acc(c);
    bench_backend_ops(c, &Cpu::new(), "cpu");
    // Vulkan side by side, on the first device (a GPU if there is one; lavapipe here, which is
    // for correctness and runs at about 1 GFLOP/s). FRACTALNET_BENCH_DEVICES=cpu skips it.
    if std::env::var("FRACTALNET_BENCH_DEVICES").map_or(true, |d| d.contains("vulkan")) {
        match fractalnet::backend::vulkan::Vulkan::new(None) {
            Ok(v) => bench_backend_ops(c, &v, "vulkan"),
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
