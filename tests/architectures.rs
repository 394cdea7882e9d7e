//! The paper's other architectures as plans: FractalNet-34 (ResNet-34's stem and head around
//! four blocks), thin columns with 1x1 projections before the joins, and the 1x1, mixed and
//! bottleneck units. Parameter counts from hand-written layer lists, finite-difference
//! gradients against the f64 reference (tests/common/reference.rs) through the stem, padded
//! max-pool, projections and global average pooling, liveness as counted by an instrumented
//! backend, short training runs, model files that rebuild the architecture, and bad sizes.

mod common;

use common::Counting;
use common::reference::{Reference, T64};
use fractalnet::Shape;
use fractalnet::backend::{Backend, Cpu};
use fractalnet::gradcheck::random_vec;
use fractalnet::model::io::{ModelMeta, load_model, save_model};
use fractalnet::model::stats::stats;
use fractalnet::model::{Mode, Network, Sgd, StatsSel};
use fractalnet::plan::{Arch, DropPath, FractalConfig, KeepMask, Op, Plan, Site, UnitKind};
use fractalnet::rng::SeededRng;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Trainable scalars of conv (no bias) -> BN (gamma, beta).
fn conv_bn(cin: usize, cout: usize, k: usize) -> usize {
    cout * cin * k * k + 2 * cout
}

/// Columns taking part in join j of a block of C columns (shared/SPEC.md): c >= C-1-t, 2^t
/// the largest power of two dividing p = 2(j+1), t at most C-1.
fn join_columns(columns: usize, j: usize) -> Vec<usize> {
    let p = 2 * (j + 1);
    let t = (p.trailing_zeros() as usize).min(columns - 1);
    (columns - 1 - t..columns).collect()
}

#[test]
fn fractalnet34_parameter_count_from_its_layer_list() {
    // Table 2 of the paper: ResNet-34's first layer (7x7/2, 64 channels) and last (global
    // average pooling, 1000-way FC) around B = 4 blocks of C = 4 columns, 128..1024 channels.
    let mut n = conv_bn(3, 64, 7);
    let widths = [128, 256, 512, 1024];
    let mut cin = 64;
    for &cout in &widths {
        for c in 0..4 {
            for l in 0..1usize << c {
                n += conv_bn(if l == 0 { cin } else { cout }, cout, 3);
            }
        }
        cin = cout;
    }
    n += 1024 * 1000 + 1000;
    assert_eq!(n, 164_031_016);
    let plan = Plan::new(&FractalConfig::fractalnet34(1000)).unwrap();
    let s = stats(&plan, 1);
    assert_eq!(s.params, n);
    // 1 stem + 4 x 8 layers + the classifier
    assert_eq!(s.depth + 1, 34);
    // the stem's 112 -> 56 pooling, and no pooling after the last block: 7x7 into the head
    let shapes: Vec<&Vec<usize>> = plan
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::GlobalAvgPool))
        .map(|n| &plan.nodes[n.inputs[0]].shape)
        .collect();
    assert_eq!(shapes, [&vec![1024, 7, 7]]);
    assert_eq!(plan.features, 1024);
}

/// Widths of thin columns: column_widths[c] doubled each block except the last.
fn thin_width(w: &[usize], blocks: usize, b: usize, c: usize) -> usize {
    w[c] * (1 << b.min(blocks - 2))
}

/// Trainable scalars of a thin-column CIFAR network with the `mixed` unit, from the rules:
/// layer l of a column is 3x3 when l is even, 1x1 when odd; it reads the block input (l = 0),
/// a join (at the block's width), or, in the deepest column at an odd position, its own
/// previous layer; a column whose width is not the block's enters each of its joins through
/// a 1x1 conv-BN projection.
fn thin_mixed_count(
    widths: &[usize],
    channels: &[usize],
    in_ch: usize,
    classes: usize,
    hw: usize,
) -> usize {
    let (cols, blocks) = (widths.len(), channels.len());
    let d = 1usize << (cols - 1);
    let mut n = 0;
    let mut cin = in_ch;
    for (b, &join_w) in channels.iter().enumerate() {
        for c in 0..cols {
            let w = thin_width(widths, blocks, b, c);
            let span = d >> c;
            for l in 0..1usize << c {
                let k = if l % 2 == 1 { 1 } else { 3 };
                let pos = l * span;
                let input = if l == 0 {
                    cin
                } else if pos.is_multiple_of(2) {
                    join_w
                } else {
                    w
                };
                n += conv_bn(input, w, k);
            }
        }
        for j in 0..d / 2 {
            for c in join_columns(cols, j) {
                let w = thin_width(widths, blocks, b, c);
                if w != join_w {
                    n += conv_bn(w, join_w, 1);
                }
            }
        }
        cin = join_w;
    }
    let side = hw >> blocks;
    n + cin * side * side * classes + classes
}

fn thin_cfg(
    widths: Vec<usize>,
    channels: Vec<usize>,
    in_ch: usize,
    classes: usize,
) -> FractalConfig {
    let mut c = FractalConfig::new(widths.len(), channels, in_ch, classes);
    c.column_widths = Some(widths);
    c.unit = UnitKind::Mixed;
    c
}

#[test]
fn thin_column_parameter_count_from_its_layer_list() {
    // The paper's 40-layer CIFAR variant (Table 1, footnote 2): widths 128, 64, 32, 16 across
    // the columns, doubling each block except the last; joins at the widest column's width.
    let widths = vec![128, 64, 32, 16];
    let channels = vec![128, 256, 512, 1024, 1024];
    let want = thin_mixed_count(&widths, &channels, 3, 100, 32);
    assert_eq!(want, 51_926_964);
    let cfg = thin_cfg(widths, channels, 3, 100);
    let plan = Plan::new(&cfg).unwrap();
    assert_eq!(stats(&plan, 1).params, want);
    assert_eq!(cfg.depth(), 40);
    // a small one, against a built network's tensors too
    let cfg = thin_cfg(vec![6, 4, 2], vec![6, 8], 2, 3);
    let mut small = cfg.clone();
    small.input_hw = [8, 8];
    let net = Network::new(&Cpu::new(), &small, 0).unwrap();
    assert_eq!(
        net.params.trainable_count(),
        thin_mixed_count(&[6, 4, 2], &[6, 8], 2, 3, 8)
    );
}

#[test]
fn bottleneck_parameter_count_from_its_layer_list() {
    let mut cfg = FractalConfig::new(3, vec![16, 32], 3, 10);
    cfg.unit = UnitKind::Bottleneck;
    let mut n = 0;
    let mut cin = 3;
    for &cout in &[16usize, 32] {
        let m = cout / 4;
        for c in 0..3 {
            for l in 0..1usize << c {
                let x = if l == 0 { cin } else { cout };
                n += conv_bn(x, m, 1) + conv_bn(m, m, 3) + conv_bn(m, cout, 1);
            }
        }
        cin = cout;
    }
    n += 32 * 8 * 8 * 10 + 10;
    assert_eq!(stats(&Plan::new(&cfg).unwrap(), 1).params, n);
}

/// Logits and every live trainable tensor's gradient (and the input's) against central
/// differences of the f64 reference (eps 1e-6), as tests/network.rs does for the CIFAR net.
fn fd_check(cfg: &FractalConfig, mask: &KeepMask, what: &str) -> f64 {
    let cpu = Cpu::new();
    let mut net = Network::new(&cpu, cfg, 11).unwrap();
    let n = 4;
    let [h, w] = cfg.input_hw;
    let dims = [n, cfg.in_channels, h, w];
    let numel = dims.iter().product();
    let x = cpu
        .from_host(Shape::new(dims), &random_vec(numel, 3))
        .unwrap();
    let labels: Vec<usize> = (0..n).map(|i| (i * 2 + 1) % cfg.classes).collect();
    let labels_t = cpu
        .from_host(
            Shape::new([n]),
            &labels.iter().map(|&l| l as f32).collect::<Vec<_>>(),
        )
        .unwrap();
    let seed = 77;
    let (_, logits, grads) = net
        .loss_and_grads(&cpu, &x, &labels_t, mask, seed, true)
        .unwrap();
    let live = net.plan.liveness(mask).unwrap();
    let mut p64: HashMap<String, Vec<f64>> = net
        .params
        .specs
        .iter()
        .zip(&net.params.tensors)
        .map(|(s, t)| {
            (
                s.name.clone(),
                t.storage.iter().map(|&v| v as f64).collect(),
            )
        })
        .collect();
    let x64 = T64 {
        d: dims,
        v: x.storage.iter().map(|&v| v as f64).collect(),
    };
    let want = Reference {
        cfg,
        params: &p64,
        mask,
        dropout_seed: seed,
    }
    .logits(&x64);
    let zmax = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (a, b) in logits.storage.iter().zip(&want) {
        assert!(
            (*a as f64 - b).abs() <= 1e-4 * zmax,
            "{what}: logits {a} vs reference {b}"
        );
    }
    let mut worst = 0.0f64;
    for i in 0..net.params.specs.len() {
        let spec = net.params.specs[i].clone();
        if !spec.role.trainable() {
            continue;
        }
        let Some(g) = &grads.params[i] else {
            let u = net
                .plan
                .units
                .iter()
                .find(|u| spec.name.starts_with(&format!("{}.", u.prefix())))
                .expect("unit");
            assert!(
                !live.live[u.node],
                "{what}: {} live but got no gradient",
                spec.name
            );
            continue;
        };
        worst = worst.max(fd64(&spec.name, &g.storage, 6, what, |k, delta| {
            let saved = p64[&spec.name][k];
            p64.get_mut(&spec.name).unwrap()[k] = saved + delta;
            let l = Reference {
                cfg,
                params: &p64,
                mask,
                dropout_seed: seed,
            }
            .loss(&x64, &labels);
            p64.get_mut(&spec.name).unwrap()[k] = saved;
            l
        }));
    }
    let gi = grads.input.expect("input gradient");
    let mut xv = x64.clone();
    worst.max(fd64("input", &gi.storage, 16, what, |k, delta| {
        let saved = xv.v[k];
        xv.v[k] = saved + delta;
        let l = Reference {
            cfg,
            params: &p64,
            mask,
            dropout_seed: seed,
        }
        .loss(&xv, &labels);
        xv.v[k] = saved;
        l
    }))
}

fn fd64(
    name: &str,
    analytic: &[f32],
    count: usize,
    what: &str,
    mut loss: impl FnMut(usize, f64) -> f64,
) -> f64 {
    let n = analytic.len();
    let count = count.min(n);
    let eps = 1e-6;
    let idx: Vec<usize> = (0..count).map(|k| k * n / count).collect();
    let numeric: Vec<f64> = idx
        .iter()
        .map(|&k| (loss(k, eps) - loss(k, -eps)) / (2.0 * eps))
        .collect();
    let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
    let mut worst = 0.0f64;
    for (j, &k) in idx.iter().enumerate() {
        let err = (analytic[k] as f64 - numeric[j]).abs() / scale;
        worst = worst.max(err);
        assert!(
            err <= 1e-3,
            "{what}: {name}[{k}]: analytic {:.6e} vs numeric {:.6e} (scale {scale:.3e})",
            analytic[k],
            numeric[j]
        );
    }
    worst
}

/// Every mask kind: all paths, each global column, a local sample.
fn fd_all_masks(cfg: &FractalConfig, name: &str) {
    let mut rng = SeededRng::new(21);
    let mut worst = fd_check(cfg, &KeepMask::all(cfg), &format!("{name} all"));
    for g in 0..cfg.columns {
        worst = worst.max(fd_check(
            cfg,
            &KeepMask::column(cfg, g).unwrap(),
            &format!("{name} column {g}"),
        ));
    }
    let (mask, _) = DropPath {
        global_ratio: 0.0,
        local_p: 0.4,
    }
    .sample(cfg, &mut rng);
    worst = worst.max(fd_check(cfg, &mask, &format!("{name} local")));
    println!("{name}: worst normalised error {worst:.2e}");
}

/// FractalNet-34's layout at toy size: the stem (7x7/2 conv, BN, ReLU, padded 3x3/2 pool),
/// blocks (the last one unpooled), global average pooling.
fn tiny34(columns: usize, channels: Vec<usize>, hw: usize) -> FractalConfig {
    let mut c = FractalConfig::fractalnet34(3);
    c.columns = columns;
    c.blocks = channels.len();
    c.dropout = vec![0.0; channels.len()];
    c.channels = channels;
    c.stem_channels = Some(3);
    c.in_channels = 2;
    c.input_hw = [hw, hw];
    c
}

#[test]
fn fractalnet34_gradients_through_stem_padded_pool_and_global_average_pooling() {
    // 17x17 input: the stem conv gives 9x9, the padded pool 5x5 (odd sizes exercise the
    // padding), blocks at 5x5 and 2x2, the last unpooled.
    fd_all_masks(&tiny34(3, vec![4, 5], 17), "fractalnet34 C=3 B=2");
    let mut c = tiny34(2, vec![3, 4, 3], 32);
    c.dropout = vec![0.1, 0.2, 0.3];
    fd_all_masks(&c, "fractalnet34 C=2 B=3 dropout");
}

#[test]
fn thin_column_gradients_through_projections() {
    let mut c = thin_cfg(vec![6, 4, 2], vec![6, 8], 2, 3);
    c.input_hw = [8, 8];
    fd_all_masks(&c, "thin C=3 mixed");
    // every column thinner than its joins, on FractalNet-34's layout, with 1x1 units
    let mut c = tiny34(3, vec![5, 6], 17);
    // (no 1-channel column: BN after a 1-channel 1x1 conv makes its weight's gradient exactly 0)
    c.column_widths = Some(vec![4, 3, 2]);
    c.unit = UnitKind::Conv1x1;
    fd_all_masks(&c, "fractalnet34 thin conv1x1");
}

#[test]
fn bottleneck_gradients() {
    // bottleneck widths m = 2 and 3 (m = 1 would make BN's scale invariance zero some gradients)
    let mut c = FractalConfig::new(2, vec![8, 12], 2, 3);
    c.input_hw = [8, 8];
    c.unit = UnitKind::Bottleneck;
    c.dropout = vec![0.2, 0.1];
    fd_all_masks(&c, "bottleneck C=2");
}

/// Convolutions a unit runs: one per stage.
fn convs_of(net: &Network<Counting>, u: usize) -> usize {
    net.plan.units[u].stages().len()
}

#[test]
fn a_dropped_thin_column_projection_is_not_computed() {
    let b = Counting::default();
    // widths 8, 4, 2, 1 against joins of 8: every column but 0 is projected before each join
    let mut cfg = thin_cfg(vec![8, 4, 2, 1], vec![8, 8], 2, 3);
    cfg.input_hw = [8, 8];
    let (cols, blocks) = (4usize, 2usize);
    let mut net = Network::new(&b, &cfg, 1).unwrap();
    let x = b
        .from_host(Shape::new([3, 2, 8, 8]), &random_vec(3 * 128, 4))
        .unwrap();
    let labels = b.from_host(Shape::new([3]), &[0.0, 1.0, 2.0]).unwrap();
    for g in 0..cols {
        let mask = KeepMask::column(&cfg, g).unwrap();
        let before = net.params.clone();
        b.reset();
        let (_, _, grads) = net
            .loss_and_grads(&b, &x, &labels, &mask, 5, false)
            .unwrap();
        // column g alone: its 2^g layers, plus (g > 0) one projection per join it enters:
        // every layer of a column g < C-1 ends at a join, the deepest column's every other one
        let joins = if g == cols - 1 {
            1 << (cols - 2)
        } else {
            1 << g
        };
        let projections = if g == 0 { 0 } else { joins };
        assert_eq!(b.convs(), blocks * ((1 << g) + projections), "column {g}");
        assert_eq!(b.bn_updates.load(Ordering::SeqCst), b.convs());
        for (i, spec) in net.params.specs.iter().enumerate() {
            let own = spec.name.contains(&format!(".col{g}.")) || spec.name.starts_with("fc.");
            if spec.role.trainable() {
                assert_eq!(grads.params[i].is_some(), own, "{}", spec.name);
            }
            if spec.name.ends_with("running_mean") {
                assert_eq!(
                    net.params.tensors[i].storage != before.tensors[i].storage,
                    own,
                    "{}",
                    spec.name
                );
            }
        }
    }
    // local masks: exactly the live units run; a projection runs iff its join input is kept
    let mut rng = SeededRng::new(8);
    let mut dropped_projections = 0;
    for _ in 0..30 {
        let (mask, _) = DropPath {
            global_ratio: 0.0,
            local_p: 0.5,
        }
        .sample(&cfg, &mut rng);
        let live = net.plan.liveness(&mask).unwrap();
        let live_units = live.live_units(&net.plan);
        let before = net.params.clone();
        b.reset();
        let (_, _, grads) = net
            .loss_and_grads(&b, &x, &labels, &mask, 1, false)
            .unwrap();
        assert_eq!(
            b.convs(),
            live_units.iter().map(|&u| convs_of(&net, u)).sum::<usize>()
        );
        for u in net.plan.units.iter().filter(|u| u.site == Site::Projection) {
            // the join this projection feeds, found from the node graph
            let join = net
                .plan
                .nodes
                .iter()
                .position(|n| n.inputs.contains(&u.node))
                .unwrap();
            let kept = live.live[join] && mask.keep(u.block, u.layer, u.column);
            assert_eq!(live.live[u.node], kept, "{}", u.prefix());
            dropped_projections += usize::from(!kept);
            let wi = net
                .params
                .index(&format!("{}.conv.weight", u.prefix()))
                .unwrap();
            let mi = net
                .params
                .index(&format!("{}.bn.running_mean", u.prefix()))
                .unwrap();
            assert_eq!(grads.params[wi].is_some(), kept, "{}", u.prefix());
            assert_eq!(
                net.params.tensors[mi].storage != before.tensors[mi].storage,
                kept,
                "{}",
                u.prefix()
            );
        }
    }
    assert!(dropped_projections > 0);
}

#[test]
fn fractalnet34_single_columns_run_the_stem_and_their_own_layers() {
    let b = Counting::default();
    let mut cfg = tiny34(4, vec![4, 4, 4, 4], 32);
    cfg.unit = UnitKind::Bottleneck;
    let mut net = Network::new(&b, &cfg, 2).unwrap();
    let x = b
        .from_host(Shape::new([2, 2, 32, 32]), &random_vec(2 * 2 * 1024, 5))
        .unwrap();
    for g in 0..4 {
        b.reset();
        net.forward(
            &b,
            &x,
            &KeepMask::column(&cfg, g).unwrap(),
            Mode::Eval {
                stats: StatsSel::Running,
            },
        )
        .unwrap();
        // the stem, then 4 blocks of 2^g bottlenecks of 3 convolutions each
        assert_eq!(b.convs(), 1 + 4 * 3 * (1 << g));
    }
}

/// Labels from a fixed rule on the image (the sign of a weighted sum of its pixels), so a
/// network can learn them; the loss (training-mode BN, every path) on that batch must fall.
fn loss_falls(cfg: &FractalConfig, steps: usize, lr: f32) -> (f32, f32) {
    let cpu = Cpu::new();
    let mut net = Network::new(&cpu, cfg, 3).unwrap();
    let [h, w] = cfg.input_hw;
    let n = 12;
    let per = cfg.in_channels * h * w;
    let xv = random_vec(n * per, 9);
    let dir = random_vec(per, 10);
    let labels: Vec<f32> = xv
        .chunks(per)
        .map(|img| {
            let s: f32 = img.iter().zip(&dir).map(|(a, b)| a * b).sum();
            if s > 0.0 { 1.0 } else { 0.0 }
        })
        .collect();
    let x = cpu
        .from_host(Shape::new([n, cfg.in_channels, h, w]), &xv)
        .unwrap();
    let y = cpu.from_host(Shape::new([n]), &labels).unwrap();
    let all = KeepMask::all(cfg);
    let loss = |net: &mut Network<Cpu>| {
        net.loss_and_grads(&cpu, &x, &y, &all, 0, false)
            .unwrap()
            .0
            .storage[0]
    };
    let first = loss(&mut net);
    let mut sgd = Sgd::new(&cpu, &net.params, lr, 0.9, 0.0).unwrap();
    let mut rng = SeededRng::new(4);
    for _ in 0..steps {
        let (mask, _) = DropPath::PAPER.sample(cfg, &mut rng);
        net.train_step(&cpu, &x, &y, &mask, rng.next_u64(), &mut sgd)
            .unwrap();
    }
    let last = loss(&mut net);
    assert!(
        last.is_finite() && last < 0.7 * first,
        "{cfg:?}: loss {first} -> {last}"
    );
    (first, last)
}

#[test]
fn short_training_runs_reduce_the_loss() {
    let mut c34 = tiny34(4, vec![8, 8, 8, 8], 32);
    c34.stem_channels = Some(8);
    c34.in_channels = 3;
    println!(
        "fractalnet34 (8,8,8,8) 32x32: {:?}",
        loss_falls(&c34, 30, 0.02)
    );
    let mut thin = thin_cfg(vec![8, 4, 2], vec![8, 16, 16], 3, 3);
    thin.input_hw = [16, 16];
    println!(
        "thin columns 8,4,2 mixed: {:?}",
        loss_falls(&thin, 30, 0.02)
    );
    let mut bottleneck = FractalConfig::new(3, vec![8, 16], 3, 3);
    bottleneck.input_hw = [16, 16];
    bottleneck.unit = UnitKind::Bottleneck;
    println!("bottleneck: {:?}", loss_falls(&bottleneck, 30, 0.02));
}

#[test]
fn model_files_record_the_architecture_and_old_files_still_parse() {
    let cpu = Cpu::new();
    let dir = std::env::temp_dir().join(format!("fractalnet-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut thin34 = tiny34(3, vec![4, 6], 17);
    thin34.column_widths = Some(vec![4, 2, 1]);
    thin34.unit = UnitKind::Mixed;
    let mut bottleneck = FractalConfig::new(2, vec![8, 4], 2, 3);
    bottleneck.input_hw = [8, 8];
    bottleneck.unit = UnitKind::Bottleneck;
    for (i, cfg) in [tiny34(2, vec![3, 4], 32), thin34, bottleneck]
        .into_iter()
        .enumerate()
    {
        let mut net = Network::new(&cpu, &cfg, 5).unwrap();
        let path = dir.join(format!("m{i}.safetensors"));
        save_model(
            &path,
            &cpu,
            &net,
            &ModelMeta::new(cfg.clone(), vec![0.5; 2], vec![0.25; 2]),
        )
        .unwrap();
        let (mut loaded, meta) = load_model(&path, &cpu).unwrap();
        assert_eq!(meta.config, cfg);
        let [h, w] = cfg.input_hw;
        let x = cpu
            .from_host(Shape::new([2, 2, h, w]), &random_vec(4 * h * w, 6))
            .unwrap();
        let mask = KeepMask::all(&cfg);
        let eval = Mode::Eval {
            stats: StatsSel::Running,
        };
        assert_eq!(
            net.forward(&cpu, &x, &mask, eval).unwrap().logits.storage,
            loaded
                .forward(&cpu, &x, &mask, eval)
                .unwrap()
                .logits
                .storage
        );
        let names: Vec<&str> = net.params.specs.iter().map(|s| s.name.as_str()).collect();
        if cfg.arch == Arch::Fractalnet34 {
            assert!(
                names.contains(&"stem.conv.weight") && names.contains(&"stem.bn.running_var"),
                "{names:?}"
            );
        }
        if cfg.column_widths.is_some() {
            assert!(
                names.contains(&"block0.col2.proj0.conv.weight")
                    && names.contains(&"block1.col1.proj1.bn.gamma"),
                "{names:?}"
            );
        }
        if cfg.unit == UnitKind::Bottleneck {
            assert!(
                names.contains(&"block0.col1.layer1.conv3.weight")
                    && names.contains(&"block1.col0.layer0.bn2.beta"),
                "{names:?}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // the CIFAR network's metadata carries none of the new keys (its files are unchanged),
    // and a config written before them reads as the CIFAR network
    let cifar = FractalConfig::new(3, vec![16, 32], 3, 10);
    let json = serde_json::to_value(&cifar).unwrap();
    for key in ["arch", "stem_channels", "column_widths"] {
        assert!(json.get(key).is_none(), "{key} in {json}");
    }
    let old = r#"{"blocks":2,"columns":3,"channels":[16,32],"in_channels":3,"classes":10,"input_hw":[32,32],"dropout":[0.0,0.0],"unit":"conv_bn_relu"}"#;
    assert_eq!(serde_json::from_str::<FractalConfig>(old).unwrap(), cifar);
    let j34 = serde_json::to_value(FractalConfig::fractalnet34(1000)).unwrap();
    assert_eq!(
        (j34["arch"].as_str(), j34["stem_channels"].as_u64()),
        (Some("fractalnet34"), Some(64))
    );
}

#[test]
fn bad_architecture_settings_are_one_line_errors() {
    let mut c = FractalConfig::fractalnet34(10);
    c.input_hw = [16, 16];
    let e = Plan::new(&c).unwrap_err().to_string();
    assert!(e.contains("--input-hw 16x16") && e.contains("29x29"), "{e}");
    c.input_hw = [29, 29];
    assert!(Plan::new(&c).is_ok());
    let mut c = FractalConfig::new(3, vec![8], 3, 10);
    c.column_widths = Some(vec![4, 2]);
    assert!(
        Plan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("--column-widths has 2 entries")
    );
    c.column_widths = Some(vec![4, 0, 2]);
    assert!(
        Plan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("--column-widths")
    );
    let mut c = FractalConfig::new(3, vec![8], 3, 10);
    c.stem_channels = Some(8);
    assert!(
        Plan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("--stem-channels")
    );
    assert!(
        UnitKind::parse("conv5x5")
            .unwrap_err()
            .to_string()
            .contains("--unit")
    );
    assert!(
        Arch::parse("resnet")
            .unwrap_err()
            .to_string()
            .contains("--arch")
    );
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fractalnet"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn info_reports_the_paper_architectures() {
    let (rc, out, err) = cli(&[
        "info",
        "--arch",
        "fractalnet34",
        "--input-hw",
        "224,224",
        "--classes",
        "1000",
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("164,031,016 trainable"), "{out}");
    let (rc, out, err) = cli(&[
        "info",
        "--columns",
        "4",
        "--channels",
        "128,256,512,1024,1024",
        "--column-widths",
        "128,64,32,16",
        "--unit",
        "mixed",
        "--classes",
        "100",
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("51,926,964 trainable"), "{out}");
    for (args, want) in [
        (
            vec![
                "info",
                "--arch",
                "fractalnet34",
                "--input-hw",
                "16,16",
                "--classes",
                "10",
            ],
            "--input-hw",
        ),
        (vec!["info", "--arch", "vgg", "--classes", "10"], "--arch"),
        (
            vec![
                "info",
                "--columns",
                "3",
                "--channels",
                "8,8",
                "--unit",
                "x",
                "--classes",
                "10",
            ],
            "--unit",
        ),
        (
            vec![
                "info",
                "--columns",
                "3",
                "--channels",
                "8,8",
                "--column-widths",
                "4,2",
                "--classes",
                "10",
            ],
            "--column-widths",
        ),
        (
            vec!["info", "--channels", "8,8", "--classes", "10"],
            "--columns",
        ),
    ] {
        let (rc, _, err) = cli(&args);
        assert_eq!(rc, 2, "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A training step of each new architecture on Vulkan against the CPU: loss, logits, every
/// gradient. Fails without a Vulkan device unless FRACTALNET_SKIP_VULKAN=1 (as
/// tests/vulkan_conformance.rs).
#[test]
fn new_architectures_train_on_vulkan_as_on_the_cpu() {
    use fractalnet::backend::vulkan::Vulkan;
    let vk = match Vulkan::new(None) {
        Ok(vk) => vk,
        Err(e) if std::env::var("FRACTALNET_SKIP_VULKAN").is_ok_and(|v| v == "1") => {
            println!("SKIPPED (FRACTALNET_SKIP_VULKAN=1): {e}");
            return;
        }
        Err(e) => panic!("no usable Vulkan device ({e}); set FRACTALNET_SKIP_VULKAN=1 to skip"),
    };
    let cpu = Cpu::new();
    let mut thin = tiny34(3, vec![6, 8], 19);
    thin.column_widths = Some(vec![6, 4, 2]);
    thin.unit = UnitKind::Mixed;
    thin.dropout = vec![0.1, 0.2];
    let mut bottleneck = FractalConfig::new(2, vec![8, 12], 3, 3);
    bottleneck.input_hw = [8, 8];
    bottleneck.unit = UnitKind::Bottleneck;
    for cfg in [tiny34(2, vec![4, 6, 8], 32), thin, bottleneck] {
        let mut nc = Network::new(&cpu, &cfg, 7).unwrap();
        let mut nv = Network::from_params(
            Plan::new(&cfg).unwrap(),
            nc.params.to_backend(&cpu, &vk).unwrap(),
        )
        .unwrap();
        let [h, w] = cfg.input_hw;
        let dims = [4, cfg.in_channels, h, w];
        let xv = random_vec(dims.iter().product(), 12);
        let mask = DropPath {
            global_ratio: 0.0,
            local_p: 0.3,
        }
        .sample(&cfg, &mut SeededRng::new(3))
        .0;
        let (lc, zc, gc) = nc
            .loss_and_grads(
                &cpu,
                &cpu.from_host(Shape::new(dims), &xv).unwrap(),
                &cpu.from_host(Shape::new([4]), &[0., 1., 2., 1.]).unwrap(),
                &mask,
                9,
                true,
            )
            .unwrap();
        let (lv, zv, gv) = nv
            .loss_and_grads(
                &vk,
                &vk.from_host(Shape::new(dims), &xv).unwrap(),
                &vk.from_host(Shape::new([4]), &[0., 1., 2., 1.]).unwrap(),
                &mask,
                9,
                true,
            )
            .unwrap();
        let close = |what: &str, a: &[f32], b: &[f32]| {
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1e-6;
            let err = a
                .iter()
                .zip(b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
                / scale;
            assert!(err < 1e-3, "{:?} {what}: normalised error {err}", cfg.arch);
        };
        close("loss", &vk.to_host(&lv).unwrap(), &lc.storage);
        close("logits", &vk.to_host(&zv).unwrap(), &zc.storage);
        for (i, (a, b)) in gv.params.iter().zip(&gc.params).enumerate() {
            match (a, b) {
                (Some(a), Some(b)) => close(
                    &nc.params.specs[i].name,
                    &vk.to_host(a).unwrap(),
                    &b.storage,
                ),
                (None, None) => {}
                _ => panic!("{}: gradient on one backend only", nc.params.specs[i].name),
            }
        }
        close(
            "input",
            &vk.to_host(gv.input.as_ref().unwrap()).unwrap(),
            &gc.input.as_ref().unwrap().storage,
        );
    }
}
