//! Direct convolution against Winograd F(2x2, 3x3) and F(4x4, 3x3), layer by layer, for the folded inference
//! layers of the deepest column of C = 3, channels 16,32,64,128,128, 32x32 input: the table
//! behind `ops::conv2d::winograd::pays`. `cargo bench --bench winograd [-- BATCH]` (default
//! 100; 1 for latency). All run relu(conv + bias) on the same thread pool, alternating, best
//! of 5 rounds each; a ratio is direct time / Winograd time (above 1: Winograd is faster).
//! "chosen" is the tile `Tile::for_channels` prepares and whether `pays` lets it run.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs a token amount of work.

use fractalnet::ops::conv2d::winograd::Tile;
use fractalnet::ops::conv2d::{ConvGeom, cpu, winograd};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let batch: usize =
        args.iter()
            .find_map(|a| a.parse().ok())
            .unwrap_or(if full { 100 } else { 2 });
    // (cin, cout, map side, layers like it in the column)
    let layers = [
        (3, 16, 32, 1),
        (16, 16, 32, 3),
        (16, 32, 16, 1),
        (32, 32, 16, 3),
        (32, 64, 8, 1),
        (64, 64, 8, 3),
        (64, 128, 4, 1),
        (128, 128, 4, 3),
        (128, 128, 2, 4),
    ];
    println!(
        "batch {batch}, {} threads; times per layer call, best of 5 rounds",
        rayon::current_num_threads()
    );
    println!(
        "{:<16} {:>10} {:>10} {:>6} {:>10} {:>6} {:>12} {:>9} {:>9}",
        "layer",
        "direct us",
        "F2 us",
        "ratio",
        "F4 us",
        "ratio",
        "chosen",
        "F2 |diff|",
        "F4 |diff|"
    );
    let (mut direct_total, mut chosen_total) = (0.0, 0.0);
    for (cin, cout, hw, count) in layers {
        let g = ConvGeom {
            n: batch,
            cin,
            h: hw,
            w: hw,
            cout,
            kh: 3,
            kw: 3,
            ho: hw,
            wo: hw,
            stride: 1,
            pad: 1,
        };
        let x: Vec<f32> = (0..batch * cin * hw * hw)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..cout * cin * 9)
            .map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..cout).map(|i| i as f32 * 0.01).collect();
        let w2 = winograd::Weights::new(&w, cout, cin, Tile::F2);
        let w4 = winograd::Weights::new(&w, cout, cin, Tile::F4);
        let mut y = vec![0.0f32; batch * cout * hw * hw];
        let iters = if full {
            (200_000_000 / g.macs().max(1)).clamp(3, 2000)
        } else {
            1
        };
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        };
        let (mut d, mut t2, mut t4) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..if full { 5 } else { 1 } {
            d = d.min(time(&mut || {
                std::hint::black_box(cpu::forward_bias_relu(&g, &x, &w, &bias));
            }));
            t2 = t2.min(time(&mut || {
                winograd::forward(&g, &x, &w2, Some(&bias), &mut y);
                std::hint::black_box(&y);
            }));
            t4 = t4.min(time(&mut || {
                winograd::forward(&g, &x, &w4, Some(&bias), &mut y);
                std::hint::black_box(&y);
            }));
        }
        let yd = cpu::forward_bias_relu(&g, &x, &w, &bias);
        let mut err = |wt: &winograd::Weights| {
            winograd::forward(&g, &x, wt, Some(&bias), &mut y);
            yd.iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        };
        let (e2, e4) = (err(&w2), err(&w4));
        let tile = Tile::for_map([hw, hw]);
        let pays = winograd::pays(&g, tile);
        let wv = if tile == Tile::F2 { t2 } else { t4 };
        println!(
            "{:<16} {:>10.1} {:>10.1} {:>6.2} {:>10.1} {:>6.2} {:>12} {:>9.1e} {:>9.1e}",
            format!("{cin}->{cout} {hw}x{hw}"),
            d * 1e6,
            t2 * 1e6,
            d / t2,
            t4 * 1e6,
            d / t4,
            format!("{tile:?} {}", if pays { "runs" } else { "no" }),
            e2,
            e4
        );
        direct_total += d * count as f64;
        chosen_total += if pays { wv } else { d } * count as f64;
    }
    println!(
        "column (20 layers): direct {:.1} us, Winograd where it pays {:.1} us, ratio {:.2}",
        direct_total * 1e6,
        chosen_total * 1e6,
        direct_total / chosen_total
    );
}
