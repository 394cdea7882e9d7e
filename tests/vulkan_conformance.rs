//! Every op of the `Backend` trait, forward and backward, on Vulkan against the CPU reference,
//! on the same random inputs at shapes that do and do not divide the kernels' tiles.
//!
//! Error measure: max|vulkan - cpu| / (max|cpu| + 1e-6) over the output, against a tolerance
//! stated per op (see `Tol`). Ops whose kernel does the CPU's arithmetic in the CPU's order
//! must match bit for bit (tolerance 0); dropout masks are always compared exactly.
//!
//! Runs under VK_LAYER_KHRONOS_validation with synchronization validation and fails on any
//! validation error, including the leak report when the device is destroyed at the end.
//! FAILS when no Vulkan device is found, unless FRACTALNET_SKIP_VULKAN=1.
//! Environment: FRACTALNET_VK_DEVICE=<index> picks a device; FRACTALNET_VK_VALIDATION=0 turns
//! the validation layer off (for a machine without it; CI keeps it on).

use fractalnet::backend::vulkan::{Vulkan, VulkanOptions, list_devices};
use fractalnet::gradcheck::{random_tensor, random_vec};
use fractalnet::ops::batchnorm::{EPS, MOMENTUM};
use fractalnet::ops::conv2d::Conv2dParams;
use fractalnet::ops::pool::Pool2dParams;
use fractalnet::{Backend, Cpu, Shape, Tensor};
use std::collections::BTreeMap;
use std::time::Instant;

/// Tolerances (normalised max error), with why.
struct Tol;
impl Tol {
    /// Same arithmetic, same order, no fusion: bit-identical.
    const EXACT: f64 = 0.0;
    /// Division / sqrt may be a few ulp off on a GPU (Vulkan allows 2.5 ulp for x/y).
    const ULPS: f64 = 1e-6;
    /// Sums of up to a few thousand products in another order (tiles, FMA) than the CPU's
    /// packed GEMM: error grows like sqrt(K) ulp relative to the output's scale.
    const GEMM: f64 = 2e-5;
    /// f32 tree reductions against the CPU's f64 sums (BatchNorm statistics, pooling, loss).
    const REDUCE: f64 = 1e-5;
    /// BatchNorm backward: dx is a difference of terms of similar size (g - mean g - xhat
    /// mean(g xhat)), so cancellation amplifies the f32-vs-f64 reduction error.
    const BN_BACKWARD: f64 = 1e-4;
    /// exp/log in f32 against the CPU's f64.
    const SOFTMAX: f64 = 1e-5;
}

#[derive(Default)]
struct OpStat {
    cases: usize,
    worst: f64,
    tol: f64,
}

struct Report {
    ops: BTreeMap<&'static str, OpStat>,
    failures: Vec<String>,
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64))
}

/// max|a - b| / (max(max|b|, floor) + 1e-6); `floor` is 0 except where the output's own
/// scale says nothing about its rounding error (see `batchnorm`).
fn norm_err(a: &[f32], b: &[f32], floor: f64) -> f64 {
    let scale = max_abs(b).max(floor);
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    let bad = a.iter().zip(b).any(|(x, y)| x.is_nan() != y.is_nan());
    if bad {
        f64::INFINITY
    } else {
        diff / (scale + 1e-6)
    }
}

impl Report {
    fn new() -> Self {
        Report {
            ops: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    fn values(&mut self, op: &'static str, case: &str, tol: f64, vk: &[f32], cpu: &[f32]) {
        self.values_scaled(op, case, tol, vk, cpu, 0.0)
    }

    fn values_scaled(
        &mut self,
        op: &'static str,
        case: &str,
        tol: f64,
        vk: &[f32],
        cpu: &[f32],
        floor: f64,
    ) {
        let e = if vk.len() != cpu.len() {
            f64::INFINITY
        } else if tol == 0.0 {
            // Bit equality (0.0 and -0.0 are equal here: both backends may produce either).
            if vk
                .iter()
                .zip(cpu)
                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
            {
                0.0
            } else {
                norm_err(vk, cpu, floor).max(f64::MIN_POSITIVE)
            }
        } else {
            norm_err(vk, cpu, floor)
        };
        let s = self.ops.entry(op).or_default();
        s.cases += 1;
        s.tol = tol;
        if e > s.worst {
            s.worst = e;
        }
        if e > tol {
            self.failures.push(format!(
                "{op} [{case}]: normalised error {e:.3e} > tolerance {tol:.0e}"
            ));
        }
    }

    fn tensors(
        &mut self,
        op: &'static str,
        case: &str,
        tol: f64,
        vk: &Vulkan,
        a: &Tensor<Vulkan>,
        b: &Tensor<Cpu>,
    ) {
        if a.shape != b.shape {
            self.failures.push(format!(
                "{op} [{case}]: shape {} vs cpu {}",
                a.shape, b.shape
            ));
            return;
        }
        let av = vk.to_host(a).expect("download");
        self.values(op, case, tol, &av, &b.storage);
    }

    #[allow(clippy::too_many_arguments)]
    fn tensors_scaled(
        &mut self,
        op: &'static str,
        case: &str,
        tol: f64,
        vk: &Vulkan,
        a: &Tensor<Vulkan>,
        b: &Tensor<Cpu>,
        floor: f64,
    ) {
        if a.shape != b.shape {
            self.failures.push(format!(
                "{op} [{case}]: shape {} vs cpu {}",
                a.shape, b.shape
            ));
            return;
        }
        let av = vk.to_host(a).expect("download");
        self.values_scaled(op, case, tol, &av, &b.storage, floor);
    }

    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }
}

struct Pair<'a> {
    vk: &'a Vulkan,
    cpu: &'a Cpu,
}

impl Pair<'_> {
    fn random(&self, shape: impl Into<Shape>, seed: u64) -> (Tensor<Vulkan>, Tensor<Cpu>) {
        let shape = shape.into();
        (
            random_tensor(self.vk, shape.clone(), seed),
            random_tensor(self.cpu, shape, seed),
        )
    }
    fn host(&self, shape: impl Into<Shape>, v: &[f32]) -> (Tensor<Vulkan>, Tensor<Cpu>) {
        let shape = shape.into();
        (
            self.vk.from_host(shape.clone(), v).expect("upload"),
            self.cpu.from_host(shape, v).expect("cpu"),
        )
    }
    /// Values on a coarse grid (many exact ties: exercises "first maximum" rules).
    fn coarse(&self, shape: impl Into<Shape>, seed: u64) -> (Tensor<Vulkan>, Tensor<Cpu>) {
        let shape = shape.into();
        let v: Vec<f32> = random_vec(shape.numel(), seed)
            .iter()
            .map(|x| (x * 3.0).round() / 2.0)
            .collect();
        self.host(shape, &v)
    }
}

fn elementwise(p: &Pair, r: &mut Report) {
    // More than 65535 workgroups of 256: the element-wise grid spreads into y.
    let big = 16_777_300;
    let (xv, xc) = p.random([big], 9);
    r.tensors(
        "scale",
        "[16777300]",
        Tol::EXACT,
        p.vk,
        &p.vk.scale(&xv, -1.5).unwrap(),
        &p.cpu.scale(&xc, -1.5).unwrap(),
    );
    for (i, shape) in [
        vec![1],
        vec![7],
        vec![1000],
        vec![3, 5, 7, 11],
        vec![70_001],
    ]
    .into_iter()
    .enumerate()
    {
        let case = format!("{shape:?}");
        let (xv, xc) = p.random(Shape::new(shape.clone()), 10 + i as u64);
        let (yv, yc) = p.random(Shape::new(shape.clone()), 20 + i as u64);
        let (mut av, mut ac) = (xv.clone(), xc.clone());
        p.vk.add_assign(&mut av, &yv).unwrap();
        p.cpu.add_assign(&mut ac, &yc).unwrap();
        r.tensors("add_assign", &case, Tol::EXACT, p.vk, &av, &ac);
        // Copy-on-write: the clone `xv` that shared av's buffer must be unchanged.
        r.tensors(
            "add_assign",
            &format!("{case} clone"),
            Tol::EXACT,
            p.vk,
            &xv,
            &xc,
        );
        let s = 0.37 - i as f32;
        r.tensors(
            "scale",
            &case,
            Tol::EXACT,
            p.vk,
            &p.vk.scale(&xv, s).unwrap(),
            &p.cpu.scale(&xc, s).unwrap(),
        );
        r.tensors(
            "mul",
            &case,
            Tol::EXACT,
            p.vk,
            &p.vk.mul(&xv, &yv).unwrap(),
            &p.cpu.mul(&xc, &yc).unwrap(),
        );
        let (rv, rc) = (
            p.vk.relu_forward(&xv).unwrap(),
            p.cpu.relu_forward(&xc).unwrap(),
        );
        r.tensors("relu_forward", &case, Tol::EXACT, p.vk, &rv, &rc);
        r.tensors(
            "relu_backward",
            &case,
            Tol::EXACT,
            p.vk,
            &p.vk.relu_backward(&rv, &yv).unwrap(),
            &p.cpu.relu_backward(&rc, &yc).unwrap(),
        );
    }
    // In place (unshared) accumulation, twice.
    let (mut av, mut ac) = p.random([4, 9], 30);
    let (xv, xc) = p.random([4, 9], 31);
    for _ in 0..2 {
        p.vk.add_assign(&mut av, &xv).unwrap();
        p.cpu.add_assign(&mut ac, &xc).unwrap();
    }
    r.tensors("add_assign", "in place x2", Tol::EXACT, p.vk, &av, &ac);
}

fn storage(p: &Pair, r: &mut Report) {
    for shape in [vec![1], vec![0], vec![3, 0], vec![5, 3], vec![2, 3, 33, 17]] {
        let case = format!("{shape:?}");
        let z = p.vk.zeros(&Shape::new(shape.clone())).unwrap();
        let zc = p.cpu.zeros(&Shape::new(shape.clone())).unwrap();
        r.tensors("zeros", &case, Tol::EXACT, p.vk, &z, &zc);
        let (v, c) = p.random(Shape::new(shape.clone()), 40);
        r.tensors("from_host/to_host", &case, Tol::EXACT, p.vk, &v, &c);
    }
    if p.vk.from_host(Shape::new([3]), &[1.0, 2.0]).is_ok() {
        r.fail("from_host accepted 2 values for shape [3]".into());
    }
    // Too big for the device: an error (buffer limit or out of memory), not a panic.
    match p.vk.zeros(&Shape::new([1usize << 34])) {
        Ok(_) => r.fail("zeros of 2^34 floats succeeded".into()),
        Err(e) => println!("zeros of 2^34 floats: {e}"),
    }
    // Reshape shares the buffer.
    let (v, c) = p.random([2, 3, 4], 41);
    let v = v.reshape([6, 4]).unwrap();
    let c = c.reshape([6, 4]).unwrap();
    r.tensors("from_host/to_host", "reshaped", Tol::EXACT, p.vk, &v, &c);
}

fn linear(p: &Pair, r: &mut Report) {
    // (N, F, K): tile-aligned and not, down to 1x1x1.
    for (i, [n, f, k]) in [
        [1, 1, 1],
        [17, 33, 9],
        [130, 70, 65],
        [64, 64, 64],
        [100, 128, 10],
        [3, 300, 2],
    ]
    .into_iter()
    .enumerate()
    {
        let case = format!("N{n} F{f} K{k}");
        let s = 100 + 10 * i as u64;
        let (xv, xc) = p.random([n, f], s);
        let (wv, wc) = p.random([k, f], s + 1);
        let (bv, bc) = p.random([k], s + 2);
        let (dyv, dyc) = p.random([n, k], s + 3);
        r.tensors(
            "linear_forward",
            &case,
            Tol::GEMM,
            p.vk,
            &p.vk.linear_forward(&xv, &wv, &bv).unwrap(),
            &p.cpu.linear_forward(&xc, &wc, &bc).unwrap(),
        );
        let (dxv, dwv, dbv) = p.vk.linear_backward(&xv, &wv, &dyv).unwrap();
        let (dxc, dwc, dbc) = p.cpu.linear_backward(&xc, &wc, &dyc).unwrap();
        r.tensors("linear_backward.dx", &case, Tol::GEMM, p.vk, &dxv, &dxc);
        r.tensors("linear_backward.dw", &case, Tol::GEMM, p.vk, &dwv, &dwc);
        // Column sums in the CPU's row order.
        r.tensors("linear_backward.db", &case, Tol::EXACT, p.vk, &dbv, &dbc);
    }
}

fn conv2d(p: &Pair, r: &mut Report) {
    // (N, Cin, H, W, Cout, k, stride, pad)
    let cases: [[usize; 8]; 13] = [
        [2, 3, 7, 9, 5, 3, 1, 1],     // 3x3 pad 1 on odd sizes
        [1, 1, 1, 1, 1, 1, 1, 0],     // 1x1 on 1x1
        [3, 4, 8, 8, 6, 3, 2, 1],     // stride 2
        [2, 5, 6, 6, 7, 1, 1, 0],     // pointwise
        [2, 3, 13, 11, 4, 7, 2, 3],   // 7x7 stride 2 pad 3
        [1, 16, 5, 5, 70, 3, 1, 1],   // Cout over one 64-row tile
        [2, 2, 9, 9, 3, 3, 2, 0],     // stride 2, no pad
        [1, 70, 3, 3, 2, 3, 1, 1],    // K = 630: many k steps, Cin over a tile for dx
        [8, 4, 16, 16, 8, 3, 1, 1],   // batch reduction long enough to split (dw)
        [2, 3, 4, 4, 2, 3, 3, 2],     // stride 3 with padding
        [1, 2, 2, 3, 3, 2, 1, 0],     // even kernel
        [4, 16, 32, 32, 16, 3, 1, 1], // a first-block FractalNet layer
        [6, 128, 2, 2, 128, 3, 1, 1], // a last-block layer: 2x2 images, K = 1152
    ];
    for (i, [n, cin, h, w, cout, k, stride, pad]) in cases.into_iter().enumerate() {
        let prm = Conv2dParams { stride, pad };
        let case = format!("N{n} Cin{cin} {h}x{w} Cout{cout} k{k} s{stride} p{pad}");
        let s = 200 + 10 * i as u64;
        let (xv, xc) = p.random([n, cin, h, w], s);
        let (wv, wc) = p.random([cout, cin, k, k], s + 1);
        let yv = p.vk.conv2d_forward(&xv, &wv, prm).unwrap();
        let yc = p.cpu.conv2d_forward(&xc, &wc, prm).unwrap();
        r.tensors("conv2d_forward", &case, Tol::GEMM, p.vk, &yv, &yc);
        let (dyv, dyc) = p.random(yc.shape.clone(), s + 2);
        let (dxv, dwv) = p.vk.conv2d_backward(&xv, &wv, &dyv, prm, true).unwrap();
        let (dxc, dwc) = p.cpu.conv2d_backward(&xc, &wc, &dyc, prm, true).unwrap();
        match (dxv, dxc) {
            (Some(a), Some(b)) => r.tensors("conv2d_backward.dx", &case, Tol::GEMM, p.vk, &a, &b),
            _ => r.fail(format!("conv2d_backward [{case}]: dx missing")),
        }
        r.tensors("conv2d_backward.dw", &case, Tol::GEMM, p.vk, &dwv, &dwc);
        let (no_dx, dw2) = p.vk.conv2d_backward(&xv, &wv, &dyv, prm, false).unwrap();
        if no_dx.is_some() {
            r.fail(format!(
                "conv2d_backward [{case}]: dx computed though not asked for"
            ));
        }
        // Reproducible: the same inputs give the same bits.
        let (a, b) = (p.vk.to_host(&dwv).unwrap(), p.vk.to_host(&dw2).unwrap());
        if a != b {
            r.fail(format!(
                "conv2d_backward [{case}]: dw differs between two runs"
            ));
        }
    }
}

/// Grids over the 65535-workgroup limit of one dimension (about a minute on lavapipe, which
/// runs big shared-memory workgroups slowly; `tools/gpu-check` runs it on real GPUs).
fn large_grids(p: &Pair, r: &mut Report) {
    // The convolutions' column tiles spread into z: N * Ho * Wo > 65535 * 64.
    let x = p.random([65, 1, 256, 256], 1000);
    let w = p.random([2, 1, 1, 1], 1001);
    let prm = Conv2dParams { stride: 1, pad: 0 };
    r.tensors(
        "conv2d_forward",
        "N65 256x256 1x1",
        Tol::GEMM,
        p.vk,
        &p.vk.conv2d_forward(&x.0, &w.0, prm).unwrap(),
        &p.cpu.conv2d_forward(&x.1, &w.1, prm).unwrap(),
    );
    // dx has the 4M columns; with stride 8, dw reduces over only 66560 terms.
    let prm = Conv2dParams { stride: 8, pad: 0 };
    let dy = p.random([65, 2, 32, 32], 1002);
    let (dxv, dwv) = p.vk.conv2d_backward(&x.0, &w.0, &dy.0, prm, true).unwrap();
    let (dxc, dwc) = p.cpu.conv2d_backward(&x.1, &w.1, &dy.1, prm, true).unwrap();
    let (dxv, dxc) = (dxv.unwrap(), dxc.unwrap());
    r.tensors(
        "conv2d_backward.dx",
        "N65 256x256 1x1 s8",
        Tol::GEMM,
        p.vk,
        &dxv,
        &dxc,
    );
    r.tensors(
        "conv2d_backward.dw",
        "N65 256x256 1x1 s8",
        Tol::GEMM,
        p.vk,
        &dwv,
        &dwc,
    );
}

fn batchnorm(p: &Pair, r: &mut Report) {
    for (i, shape) in [
        [2, 3, 5, 7],
        [1, 1, 1, 2],
        [4, 70, 3, 3],
        [3, 2, 17, 19],
        [5, 4, 1, 1],
        [1, 3, 32, 32],
        [8, 16, 32, 32],
    ]
    .into_iter()
    .enumerate()
    {
        let c = shape[1];
        let s = 300 + 10 * i as u64;
        let (xv, xc) = p.random(shape, s);
        // Shift and scale the input so that the statistics are not trivially ~0 and ~1/3.
        let (xv, xc) = (
            p.vk.scale(&xv, 3.0).unwrap(),
            p.cpu.scale(&xc, 3.0).unwrap(),
        );
        let (gv, gc) = p.random([c], s + 1);
        let (bv, bc) = p.random([c], s + 2);
        let (dyv, dyc) = p.random(shape, s + 3);
        for relu in [false, true] {
            let case = format!("{shape:?} relu={relu}");
            let (yv, sv) =
                p.vk.batchnorm_forward_train(&xv, &gv, &bv, EPS, relu)
                    .unwrap();
            let (yc, sc) = p
                .cpu
                .batchnorm_forward_train(&xc, &gc, &bc, EPS, relu)
                .unwrap();
            r.tensors(
                "batchnorm_forward_train.mean",
                &case,
                Tol::REDUCE,
                p.vk,
                &sv.mean,
                &sc.mean,
            );
            r.tensors(
                "batchnorm_forward_train.var",
                &case,
                Tol::REDUCE,
                p.vk,
                &sv.var,
                &sc.var,
            );
            r.tensors(
                "batchnorm_forward_train.y",
                &case,
                Tol::REDUCE,
                p.vk,
                &yv,
                &yc,
            );
            // Backward from each backend's own forward (the ReLU mask is y's sign).
            let (dxv, dgv, dbv) =
                p.vk.batchnorm_backward(&xv, &gv, &sv, &yv, &dyv, EPS, relu)
                    .unwrap();
            let (dxc, dgc, dbc) = p
                .cpu
                .batchnorm_backward(&xc, &gc, &sc, &yc, &dyc, EPS, relu)
                .unwrap();
            // dx = k (g - mean g - xhat mean(g xhat)), k = gamma / sqrt(var + eps): its terms
            // are of size |k| |dy| and may cancel to almost nothing (with two values per
            // channel they cancel exactly), so the error is measured against that size.
            let k_dy = sc
                .var
                .storage
                .iter()
                .zip(&gc.storage)
                .map(|(v, g)| (g.abs() / (v + EPS).sqrt()) as f64)
                .fold(0.0, f64::max)
                * max_abs(&dyc.storage);
            r.tensors_scaled(
                "batchnorm_backward.dx",
                &case,
                Tol::BN_BACKWARD,
                p.vk,
                &dxv,
                &dxc,
                k_dy,
            );
            r.tensors(
                "batchnorm_backward.dgamma",
                &case,
                Tol::REDUCE,
                p.vk,
                &dgv,
                &dgc,
            );
            r.tensors(
                "batchnorm_backward.dbeta",
                &case,
                Tol::REDUCE,
                p.vk,
                &dbv,
                &dbc,
            );
            // Evaluation mode on the same (CPU-computed) statistics.
            let mean_host = sc.mean.storage.clone();
            let var_host: Vec<f32> = sc.var.storage.iter().map(|v| v + 0.25).collect();
            let (mv, mc) = p.host([c], &mean_host);
            let (vv, vc) = p.host([c], &var_host);
            r.tensors(
                "batchnorm_forward_eval",
                &case,
                Tol::ULPS,
                p.vk,
                &p.vk
                    .batchnorm_forward_eval(&xv, &gv, &bv, &mv, &vv, EPS, relu)
                    .unwrap(),
                &p.cpu
                    .batchnorm_forward_eval(&xc, &gc, &bc, &mc, &vc, EPS, relu)
                    .unwrap(),
            );
        }
        // Running update on identical statistics: bit-identical.
        let (mean_v, mean_c) = p.random([c], s + 4);
        let (var_v, var_c) = p.host(
            [c],
            &random_vec(c, s + 5)
                .iter()
                .map(|v| v.abs())
                .collect::<Vec<_>>(),
        );
        let stats_v = fractalnet::ops::batchnorm::BatchStats {
            mean: mean_v,
            var: var_v,
        };
        let stats_c = fractalnet::ops::batchnorm::BatchStats {
            mean: mean_c,
            var: var_c,
        };
        let (mut rmv, mut rmc) = p.random([c], s + 6);
        let (mut rvv, mut rvc) = p.host([c], &vec![1.0; c]);
        let shared = rmv.clone();
        let nhw = shape[0] * shape[2] * shape[3];
        for _ in 0..2 {
            p.vk.batchnorm_update_running(&mut rmv, &mut rvv, &stats_v, MOMENTUM, nhw)
                .unwrap();
            p.cpu
                .batchnorm_update_running(&mut rmc, &mut rvc, &stats_c, MOMENTUM, nhw)
                .unwrap();
        }
        let case = format!("{shape:?}");
        r.tensors(
            "batchnorm_update_running.mean",
            &case,
            Tol::EXACT,
            p.vk,
            &rmv,
            &rmc,
        );
        r.tensors(
            "batchnorm_update_running.var",
            &case,
            Tol::EXACT,
            p.vk,
            &rvv,
            &rvc,
        );
        let (_, rm0) = p.random([c], s + 6);
        r.tensors(
            "batchnorm_update_running.mean",
            &format!("{case} clone"),
            Tol::EXACT,
            p.vk,
            &shared,
            &rm0,
        );
    }
}

fn dropout(p: &Pair, r: &mut Report) {
    let seeds = [0u64, 1, 0xDEAD_BEEF_0123_4567, u64::MAX];
    for (i, n) in [1usize, 7, 1000, 4099, 65_537].into_iter().enumerate() {
        for (j, rate) in [0.0f32, 0.1, 0.5, 0.9].into_iter().enumerate() {
            let seed = seeds[(i + j) % seeds.len()];
            let case = format!("n{n} rate{rate} seed{seed:#x}");
            let (xv, xc) = p.random([n], 400 + i as u64);
            let (yv, mv) = p.vk.dropout_forward(&xv, rate, seed).unwrap();
            let (yc, mc) = p.cpu.dropout_forward(&xc, rate, seed).unwrap();
            r.tensors("dropout_forward.mask", &case, Tol::EXACT, p.vk, &mv, &mc);
            r.tensors("dropout_forward.y", &case, Tol::EXACT, p.vk, &yv, &yc);
        }
    }
    let (xv, _) = p.random([3], 1);
    if p.vk.dropout_forward(&xv, 1.0, 0).is_ok() {
        r.fail("dropout_forward accepted rate 1".into());
    }
}

fn pooling(p: &Pair, r: &mut Report) {
    // (N, C, H, W, kernel, stride, pad)
    for (i, [n, c, h, w, k, s, pad]) in [
        [2, 3, 8, 8, 2, 2, 0],
        [1, 2, 7, 9, 2, 2, 0],
        [1, 1, 5, 5, 3, 1, 0],
        [2, 2, 6, 6, 3, 2, 0],
        [1, 1, 2, 2, 2, 2, 0],
        [3, 4, 32, 32, 2, 2, 0],
        // padded (-inf): ResNet's stem pooling on even, odd and tiny inputs
        [2, 3, 16, 16, 3, 2, 1],
        [1, 2, 7, 9, 3, 2, 1],
        [1, 1, 1, 2, 3, 2, 1],
        [2, 2, 6, 5, 3, 1, 1],
        [1, 3, 9, 9, 5, 2, 2],
    ]
    .into_iter()
    .enumerate()
    {
        let prm = Pool2dParams {
            kernel: k,
            stride: s,
            pad,
        };
        for coarse in [false, true] {
            let case = format!("[{n}, {c}, {h}, {w}] k{k} s{s} pad{pad} ties={coarse}");
            let seed = 500 + i as u64;
            let (xv, xc) = if coarse {
                p.coarse([n, c, h, w], seed)
            } else {
                p.random([n, c, h, w], seed)
            };
            let yv = p.vk.maxpool2d_forward(&xv, prm).unwrap();
            let yc = p.cpu.maxpool2d_forward(&xc, prm).unwrap();
            r.tensors("maxpool2d_forward", &case, Tol::EXACT, p.vk, &yv, &yc);
            let (dyv, dyc) = p.random(yc.shape.clone(), seed + 50);
            // Same windows, same first maximum, same order of the sums: bit-identical.
            r.tensors(
                "maxpool2d_backward",
                &case,
                Tol::EXACT,
                p.vk,
                &p.vk.maxpool2d_backward(&xv, &dyv, prm).unwrap(),
                &p.cpu.maxpool2d_backward(&xc, &dyc, prm).unwrap(),
            );
        }
    }
    for (i, shape) in [[2, 3, 5, 7], [4, 8, 1, 1], [1, 2, 32, 32], [100, 3, 2, 2]]
        .into_iter()
        .enumerate()
    {
        let case = format!("{shape:?}");
        let (xv, xc) = p.random(shape, 600 + i as u64);
        r.tensors(
            "global_avgpool_forward",
            &case,
            Tol::REDUCE,
            p.vk,
            &p.vk.global_avgpool_forward(&xv).unwrap(),
            &p.cpu.global_avgpool_forward(&xc).unwrap(),
        );
        let (dyv, dyc) = p.random([shape[0], shape[1], 1, 1], 650 + i as u64);
        let input = Shape::new(shape);
        r.tensors(
            "global_avgpool_backward",
            &case,
            Tol::EXACT,
            p.vk,
            &p.vk.global_avgpool_backward(&dyv, &input).unwrap(),
            &p.cpu.global_avgpool_backward(&dyc, &input).unwrap(),
        );
    }
}

fn join(p: &Pair, r: &mut Report) {
    for count in 1..=5usize {
        for shape in [vec![1], vec![2, 3, 5, 5]] {
            let case = format!("{count} inputs {shape:?}");
            let ins: Vec<(Tensor<Vulkan>, Tensor<Cpu>)> = (0..count)
                .map(|j| p.random(Shape::new(shape.clone()), 700 + j as u64))
                .collect();
            let iv: Vec<&Tensor<Vulkan>> = ins.iter().map(|t| &t.0).collect();
            let ic: Vec<&Tensor<Cpu>> = ins.iter().map(|t| &t.1).collect();
            r.tensors(
                "join_forward",
                &case,
                Tol::ULPS,
                p.vk,
                &p.vk.join_forward(&iv).unwrap(),
                &p.cpu.join_forward(&ic).unwrap(),
            );
        }
    }
    if p.vk.join_forward(&[]).is_ok() {
        r.fail("join_forward accepted no inputs".into());
    }
}

fn classifier(p: &Pair, r: &mut Report) {
    for (i, [n, k]) in [[1, 1], [5, 10], [100, 10], [7, 130], [3, 1000]]
        .into_iter()
        .enumerate()
    {
        let case = format!("N{n} K{k}");
        let s = 800 + 10 * i as u64;
        let (zv, zc) = p.random([n, k], s);
        let (zv, zc) = (
            p.vk.scale(&zv, 8.0).unwrap(),
            p.cpu.scale(&zc, 8.0).unwrap(),
        );
        let labels: Vec<f32> = random_vec(n, s + 1)
            .iter()
            .map(|u| ((u + 1.0) * 0.5 * k as f32).floor().min(k as f32 - 1.0))
            .collect();
        let (lv, lc) = p.host([n], &labels);
        let (loss_v, dz_v) = p.vk.softmax_xent(&zv, &lv).unwrap();
        let (loss_c, dz_c) = p.cpu.softmax_xent(&zc, &lc).unwrap();
        r.tensors(
            "softmax_xent.loss",
            &case,
            Tol::SOFTMAX,
            p.vk,
            &loss_v,
            &loss_c,
        );
        r.tensors(
            "softmax_xent.dlogits",
            &case,
            Tol::SOFTMAX,
            p.vk,
            &dz_v,
            &dz_c,
        );
        // Labels computed on the device (no host copy): checked after a download.
        let lv2 = p.vk.scale(&lv, 1.0).unwrap();
        let (loss_v2, _) = p.vk.softmax_xent(&zv, &lv2).unwrap();
        r.tensors(
            "softmax_xent.loss",
            &format!("{case} device labels"),
            Tol::SOFTMAX,
            p.vk,
            &loss_v2,
            &loss_c,
        );
        let (cv, cc) = p.coarse([n, k], s + 2);
        r.tensors(
            "argmax",
            &case,
            Tol::EXACT,
            p.vk,
            &p.vk.argmax(&cv).unwrap(),
            &p.cpu.argmax(&cc).unwrap(),
        );
    }
    let (zv, _) = p.random([2, 3], 1);
    for bad in [[0.0, 3.0], [0.5, 1.0], [-1.0, 0.0]] {
        let (lv, _) = p.host([2], &bad);
        if p.vk.softmax_xent(&zv, &lv).is_ok() {
            r.fail(format!(
                "softmax_xent accepted labels {bad:?} for 3 classes"
            ));
        }
    }
}

fn sgd(p: &Pair, r: &mut Report) {
    for (i, n) in [1usize, 33, 1000, 4097].into_iter().enumerate() {
        let case = format!("n{n}");
        let s = 900 + 10 * i as u64;
        let (mut wv, mut wc) = p.random([n], s);
        let (gv, gc) = p.random([n], s + 1);
        let (mut vv, mut vc) = p.random([n], s + 2);
        let w_shared = wv.clone();
        for step in 0..3 {
            let lr = 0.02 / (step + 1) as f32;
            p.vk.sgd_update(&mut wv, &gv, &mut vv, lr, 0.9, 5e-4)
                .unwrap();
            p.cpu
                .sgd_update(&mut wc, &gc, &mut vc, lr, 0.9, 5e-4)
                .unwrap();
        }
        r.tensors("sgd_update.w", &case, Tol::EXACT, p.vk, &wv, &wc);
        r.tensors("sgd_update.v", &case, Tol::EXACT, p.vk, &vv, &vc);
        let (_, w0) = p.random([n], s);
        r.tensors(
            "sgd_update.w",
            &format!("{case} clone"),
            Tol::EXACT,
            p.vk,
            &w_shared,
            &w0,
        );
    }
}

#[test]
fn the_backend_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Vulkan>();
    send_sync::<Tensor<Vulkan>>();
}

type Group = (&'static str, fn(&Pair, &mut Report));

const EVERY_OP: [Group; 10] = [
    ("storage", storage),
    ("elementwise", elementwise),
    ("linear", linear),
    ("conv2d", conv2d),
    ("batchnorm", batchnorm),
    ("dropout", dropout),
    ("pooling", pooling),
    ("join", join),
    ("classifier", classifier),
    ("sgd", sgd),
];

#[test]
fn vulkan_matches_cpu_on_every_op() {
    suite("vulkan conformance", &EVERY_OP);
}

#[test]
#[ignore = "large grids: about a minute on lavapipe; tools/gpu-check runs it"]
fn vulkan_matches_cpu_on_large_grids() {
    suite("vulkan large grids", &[("large grids", large_grids)]);
}

/// Opens the device (failing, not skipping, without one unless FRACTALNET_SKIP_VULKAN=1),
/// runs the groups, prints the summary and fails on any op failure or validation error.
fn suite(title: &str, groups: &[Group]) {
    let skip = std::env::var("FRACTALNET_SKIP_VULKAN").is_ok_and(|v| v == "1");
    let validation = std::env::var("FRACTALNET_VK_VALIDATION").map_or(true, |v| v != "0");
    let device = std::env::var("FRACTALNET_VK_DEVICE").ok().map(|v| {
        v.parse::<usize>()
            .expect("FRACTALNET_VK_DEVICE is an index")
    });
    match list_devices() {
        Ok(list) => {
            for d in &list {
                println!("{d}");
            }
        }
        Err(e) => println!("list_devices: {e}"),
    }
    let t0 = Instant::now();
    let vk = match Vulkan::with_options(VulkanOptions { device, validation }) {
        Ok(v) => v,
        Err(e) if skip => {
            println!("SKIPPED (FRACTALNET_SKIP_VULKAN=1): {e}");
            return;
        }
        Err(e) => panic!(
            "no usable Vulkan device ({e}); set FRACTALNET_SKIP_VULKAN=1 to skip on a machine \
             without Vulkan"
        ),
    };
    let name = vk.name();
    let log = vk.validation_log();
    assert_eq!(log.is_some(), validation, "validation layer state");
    let cpu = Cpu::new();
    let p = Pair { vk: &vk, cpu: &cpu };
    let mut r = Report::new();
    let mut timings = Vec::new();
    for (group, f) in groups {
        let t = Instant::now();
        f(&p, &mut r);
        timings.push(format!("{group} {:.2}s", t.elapsed().as_secs_f64()));
    }
    let stats = vk.stats();

    drop(vk);
    let cases: usize = r.ops.values().map(|s| s.cases).sum();
    println!("timings: {}", timings.join(", "));
    println!(
        "stream: {} dispatches, {} transfers, {} barriers, {} submissions",
        stats.dispatches, stats.transfers, stats.barriers, stats.submissions
    );
    for (op, s) in &r.ops {
        println!(
            "  {op:32} {:3} cases  worst {:.2e}  (tolerance {:.0e})",
            s.cases, s.worst, s.tol
        );
    }
    let mut validation_errors = Vec::new();
    if let Some(log) = &log {
        let rep = log.report();
        for w in rep.warnings.iter().take(5) {
            println!("validation warning: {w}");
        }
        validation_errors = rep.errors;
    }
    let worst: Vec<String> = r
        .ops
        .iter()
        .map(|(op, s)| format!("{op} {:.1e}", s.worst))
        .collect();
    println!(
        "{title} on {name}: {} ops, {cases} cases, {} failures, {} validation errors \
         (validation {}), {:.1}s; worst normalised error per op: {}",
        r.ops.len(),
        r.failures.len(),
        validation_errors.len(),
        if validation { "on" } else { "OFF" },
        t0.elapsed().as_secs_f64(),
        worst.join(", ")
    );
    for e in validation_errors.iter().take(20) {
        println!("VALIDATION ERROR: {e}");
    }
    for f in &r.failures {
        println!("FAIL: {f}");
    }
    assert!(
        r.failures.is_empty() && validation_errors.is_empty(),
        "{} op failures, {} validation errors (see above)",
        r.failures.len(),
        validation_errors.len()
    );
}
