//! The machine's practical FP32 peak, to read the GEMM and convolution benches against:
//! `cargo bench --bench peak`.
//!
//! Each thread runs independent chains of fused multiply-adds (acc = acc * a + b) in registers,
//! 8-wide (AVX2 + FMA) and 16-wide (AVX-512F), on 1 thread and on every core. Enough chains
//! are kept in flight (12) to cover the FMA latency (4 cycles) on two FMA ports. One FMA is 2
//! FLOPs per lane. Each figure is the best of 300 short (~2 ms) runs: other processes on the
//! machine only slow a run down, so the best run is the hardware's number.
//! A dependent chain of integer adds (1 per cycle) estimates the core clock, so the peak can
//! also be read as FLOPs per cycle.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs a token amount of work.

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    pub const CHAINS: usize = 12;

    /// `iters` rounds of CHAINS independent 8-wide FMAs; returns a value that depends on all.
    #[target_feature(enable = "avx2,fma")]
    pub fn fma8(iters: u64, seed: f32) -> f32 {
        // acc -> b / (1 - a) = 1: no overflow, no denormals.
        let a = _mm256_set1_ps(1.0 - 1e-7);
        let b = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(seed); CHAINS];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut s = _mm256_setzero_ps();
        for v in acc {
            s = _mm256_add_ps(s, v);
        }
        let mut out = [0.0f32; 8];
        // SAFETY: `out` has room for 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }

    /// As `fma8`, 16 wide.
    #[target_feature(enable = "avx512f")]
    pub fn fma16(iters: u64, seed: f32) -> f32 {
        let a = _mm512_set1_ps(1.0 - 1e-7);
        let b = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(seed); CHAINS];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for v in acc {
            s = _mm512_add_ps(s, v);
        }
        _mm512_reduce_add_ps(s)
    }

    /// `iters` x 8 dependent register-register integer adds: about 8 * iters cycles. (Not
    /// add-immediate: recent Intel cores fold chains of those at rename, faster than 1/cycle.)
    pub fn dependent_adds(iters: u64) -> u64 {
        let mut x: u64 = 0;
        let mut n = iters;
        // SAFETY: register-only arithmetic on the two named operands.
        unsafe {
            std::arch::asm!(
                "2:",
                "add {x}, {one}", "add {x}, {one}", "add {x}, {one}", "add {x}, {one}",
                "add {x}, {one}", "add {x}, {one}", "add {x}, {one}", "add {x}, {one}",
                "dec {n}",
                "jnz 2b",
                x = inout(reg) x,
                n = inout(reg) n,
                one = in(reg) 1u64,
                options(nomem, nostack),
            );
        }
        let _ = n;
        x
    }
}

/// Best wall time over `repeats` runs of `work` on `nt` threads started together (a barrier
/// before and after each run). Short runs and many repeats: on a shared machine, some run
/// finds every thread on a core, and the best one is the hardware's number.
#[cfg(target_arch = "x86_64")]
fn best_wall(nt: usize, repeats: usize, work: impl Fn(usize) + Sync) -> f64 {
    use std::sync::Barrier;
    use std::time::Instant;
    let barrier = Barrier::new(nt);
    let mut best = f64::MAX;
    std::thread::scope(|s| {
        for k in 1..nt {
            let (barrier, work) = (&barrier, &work);
            s.spawn(move || {
                for _ in 0..repeats {
                    barrier.wait();
                    work(k);
                    barrier.wait();
                }
            });
        }
        for _ in 0..repeats {
            barrier.wait();
            let t = Instant::now();
            work(0);
            barrier.wait();
            best = best.min(t.elapsed().as_secs_f64());
        }
    });
    best
}

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::hint::black_box;
    use x86::*;

    let full = std::env::args().any(|a| a == "--bench");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // ~2 ms per run, best of 300; a token amount under `cargo test`.
    let repeats = if full { 300 } else { 2 };
    let run_s = if full { 2e-3 } else { 1e-4 };

    // Core clock: 8 dependent adds per loop iteration retire at one per cycle.
    let add_iters = (run_s * 2e9 / 8.0) as u64;
    let clock_hz = 8.0 * add_iters as f64
        / best_wall(1, repeats, |_| {
            black_box(dependent_adds(black_box(add_iters)));
        });
    println!(
        "estimated core clock: {:.2} GHz (dependent integer adds, 1 thread)",
        clock_hz / 1e9
    );

    type Kernel = fn(u64, f32) -> f32;
    let mut kernels: Vec<(&str, usize, Kernel)> = Vec::new();
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY (both closures): called only after the features were detected.
        kernels.push(("fma8_avx2", 8, |i, s| unsafe { fma8(i, s) }));
    }
    if is_x86_feature_detected!("avx512f") {
        kernels.push(("fma16_avx512", 16, |i, s| unsafe { fma16(i, s) }));
    }

    for (name, lanes, kernel) in kernels {
        // Size a run to ~run_s assuming 2 FMA instructions per cycle at the estimated clock.
        let iters = ((run_s * clock_hz * 2.0 / CHAINS as f64) as u64).max(100);
        let flops_per_thread = iters as f64 * (CHAINS * lanes * 2) as f64;
        let mut counts = vec![1];
        if threads > 1 {
            counts.push(threads);
        }
        for nt in counts {
            let best = best_wall(nt, repeats, |k| {
                black_box(kernel(black_box(iters), 1.0 + k as f32));
            });
            let gflops = nt as f64 * flops_per_thread / best / 1e9;
            println!(
                "peak/{name}/{nt}t: {gflops:7.1} GFLOP/s  ({:.1} FLOP/cycle/core at the estimated clock)",
                gflops * 1e9 / nt as f64 / clock_hz
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("peak: only the x86_64 FMA kernels are written");
}
