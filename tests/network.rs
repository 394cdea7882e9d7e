//! The whole network: parameter counts (SPEC / paper Table 3), finite-difference gradients
//! through every parameter tensor and the input under every kind of mask, liveness as seen
//! by an instrumented backend, determinism, and bad input.

mod common;

use common::Counting;
use common::reference::{Reference, T64};
use fractalnet::Shape;
use fractalnet::backend::{Backend, Cpu};
use fractalnet::gradcheck::random_vec;
use fractalnet::model::{Mode, Network, Sgd};
use fractalnet::plan::{DropPath, FractalConfig, KeepMask};
use fractalnet::rng::SeededRng;
use std::collections::HashMap;

fn small(columns: usize, dropout: f32) -> FractalConfig {
    let mut c = FractalConfig::new(columns, vec![4, 6], 2, 3);
    c.input_hw = [8, 8];
    c.dropout = vec![dropout, dropout];
    c
}

#[test]
fn parameter_counts_are_the_spec_table() {
    let want = [
        258_292usize,
        847_716,
        2_125_204,
        4_778_820,
        10_184_692,
        21_095_076,
    ];
    for (i, &w) in want.iter().enumerate() {
        let c = FractalConfig::new(i + 1, vec![16, 32, 64, 128, 128], 3, 100);
        let net = Network::new(&Cpu::new(), &c, 0).unwrap();
        assert_eq!(net.params.trainable_count(), w, "C = {}", i + 1);
        // independently from the layer list: conv weights + BN gamma/beta + FC
        let mut n = 0;
        for u in &net.plan.units {
            n += u.cout * u.cin * 9 + 2 * u.cout;
        }
        n += 128 * 100 + 100;
        assert_eq!(n, w);
    }
}

/// The engine's logits and gradients against the f64 reference (tests/common/reference.rs):
/// logits within 1e-4 relative; every trainable tensor's gradient (6 coordinates each) and
/// the input's (16) against central differences of the f64 reference with eps = 1e-6, within
/// 1e-3 of the tensor's gradient scale. f64 with a small step stays clear of the ReLU and
/// max-pool kinks that make f32 differences of a whole network unreliable.
fn fd_check_network(columns: usize, mask: &KeepMask, dropout: f32, what: &str) -> f64 {
    let cpu = Cpu::new();
    let cfg = small(columns, dropout);
    let mut net = Network::new(&cpu, &cfg, 11).unwrap();
    let n = 4;
    let x = cpu
        .from_host(Shape::new([n, 2, 8, 8]), &random_vec(n * 128, 3))
        .unwrap();
    let labels = [0usize, 2, 1, 2];
    let labels_t = cpu
        .from_host(Shape::new([n]), &labels.map(|l| l as f32))
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
        d: [n, 2, 8, 8],
        v: x.storage.iter().map(|&v| v as f64).collect(),
    };
    let want = Reference {
        cfg: &cfg,
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
            assert!(grads.params[i].is_none(), "{} is a buffer", spec.name);
            continue;
        }
        let Some(g) = &grads.params[i] else {
            let u = net
                .plan
                .units
                .iter()
                .find(|u| spec.name.starts_with(&format!("{}.", u.prefix())))
                .expect("unit");
            assert!(!live.live[u.node], "{} live but got no gradient", spec.name);
            continue;
        };
        worst = worst.max(fd64(&spec.name, &g.storage, 6, what, |k, delta| {
            let saved = p64[&spec.name][k];
            p64.get_mut(&spec.name).unwrap()[k] = saved + delta;
            let l = Reference {
                cfg: &cfg,
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
            cfg: &cfg,
            params: &p64,
            mask,
            dropout_seed: seed,
        }
        .loss(&xv, &labels);
        xv.v[k] = saved;
        l
    }))
}

/// Central differences (eps 1e-6, f64) of `loss(k, delta)` at `count` evenly spread
/// coordinates, against `analytic`; returns the worst error relative to the scale.
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

#[test]
fn network_gradients_match_finite_differences_under_every_mask_kind() {
    let mut rng = SeededRng::new(21);
    for columns in 1..=4 {
        let cfg = small(columns, 0.0);
        let mut worst = fd_check_network(
            columns,
            &KeepMask::all(&cfg),
            0.0,
            &format!("C={columns} all"),
        );
        for g in 0..columns {
            worst = worst.max(fd_check_network(
                columns,
                &KeepMask::column(&cfg, g).unwrap(),
                0.0,
                &format!("C={columns} column {g}"),
            ));
        }
        if columns > 1 {
            let (mask, _) = DropPath {
                global_ratio: 0.0,
                local_p: 0.4,
            }
            .sample(&cfg, &mut rng);
            worst = worst.max(fd_check_network(
                columns,
                &mask,
                0.0,
                &format!("C={columns} local"),
            ));
        }
        // dropout with a fixed seed is a fixed linear map: the gradient goes through it
        worst = worst.max(fd_check_network(
            columns,
            &KeepMask::all(&cfg),
            0.2,
            &format!("C={columns} dropout"),
        ));
        println!("C={columns}: worst normalised error {worst:.2e}");
    }
}

#[test]
fn a_global_column_computes_exactly_its_layers_and_dead_statistics_stay_put() {
    let b = Counting::default();
    for columns in 1..=5 {
        let cfg = small(columns, 0.0);
        let mut net = Network::new(&b, &cfg, 1).unwrap();
        let x = b
            .from_host(Shape::new([3, 2, 8, 8]), &random_vec(3 * 128, 4))
            .unwrap();
        let labels = b.from_host(Shape::new([3]), &[0.0, 1.0, 2.0]).unwrap();
        for g in 0..columns {
            let mask = KeepMask::column(&cfg, g).unwrap();
            let before = net.params.clone();
            b.reset();
            let (_, _, grads) = net
                .loss_and_grads(&b, &x, &labels, &mask, 5, false)
                .unwrap();
            assert_eq!(
                b.convs(),
                2 << g,
                "C={columns} g={g}: 2 blocks x 2^g layers"
            );
            assert_eq!(
                b.bn_updates.load(std::sync::atomic::Ordering::SeqCst),
                2 << g
            );
            for (i, spec) in net.params.specs.iter().enumerate() {
                let own = spec.name.contains(&format!(".col{g}.")) || spec.name.starts_with("fc.");
                if spec.role.trainable() {
                    assert_eq!(grads.params[i].is_some(), own, "{}", spec.name);
                }
                let changed = net.params.tensors[i].storage != before.tensors[i].storage;
                if spec.name.ends_with("running_mean") || spec.name.ends_with("running_var") {
                    assert_eq!(changed, own, "running statistics of {}", spec.name);
                }
            }
            // a dead unit's weights do not move under SGD either
            let mut sgd = Sgd::new(&b, &net.params, 0.1, 0.9, 1e-4).unwrap();
            let snapshot = net.params.clone();
            sgd.step(&b, &mut net.params, &grads).unwrap();
            for (i, spec) in net.params.specs.iter().enumerate() {
                if spec.name.ends_with("conv.weight") && !spec.name.contains(&format!(".col{g}.")) {
                    assert_eq!(
                        net.params.tensors[i].storage, snapshot.tensors[i].storage,
                        "{}",
                        spec.name
                    );
                }
            }
        }
        // evaluation of the full network runs every layer once
        b.reset();
        net.forward(
            &b,
            &x,
            &KeepMask::all(&cfg),
            Mode::Eval {
                stats: fractalnet::model::StatsSel::Running,
            },
        )
        .unwrap();
        assert_eq!(b.convs(), 2 * ((1 << columns) - 1));
    }
}

#[test]
fn local_masks_compute_only_live_layers() {
    let b = Counting::default();
    let mut rng = SeededRng::new(8);
    let cfg = small(4, 0.0);
    let mut net = Network::new(&b, &cfg, 1).unwrap();
    let x = b
        .from_host(Shape::new([2, 2, 8, 8]), &random_vec(256, 4))
        .unwrap();
    let labels = b.from_host(Shape::new([2]), &[0.0, 1.0]).unwrap();
    for _ in 0..30 {
        let (mask, _) = DropPath {
            global_ratio: 0.0,
            local_p: 0.5,
        }
        .sample(&cfg, &mut rng);
        let live = net.plan.liveness(&mask).unwrap().live_units(&net.plan);
        let before = net.params.clone();
        b.reset();
        let (_, _, grads) = net
            .loss_and_grads(&b, &x, &labels, &mask, 1, false)
            .unwrap();
        assert_eq!(b.convs(), live.len());
        for (ui, u) in net.plan.units.iter().enumerate() {
            let is_live = live.contains(&ui);
            let wi = net
                .params
                .index(&format!("{}.conv.weight", u.prefix()))
                .unwrap();
            let mi = net
                .params
                .index(&format!("{}.bn.running_mean", u.prefix()))
                .unwrap();
            assert_eq!(grads.params[wi].is_some(), is_live);
            assert_eq!(
                net.params.tensors[mi].storage != before.tensors[mi].storage,
                is_live
            );
        }
    }
}

fn short_run(seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    let cpu = Cpu::new();
    let mut cfg = small(3, 0.1);
    cfg.channels = vec![5, 7];
    let mut net = Network::new(&cpu, &cfg, seed).unwrap();
    let mut sgd = Sgd::new(&cpu, &net.params, 0.05, 0.9, 1e-4).unwrap();
    let mut rng = SeededRng::new(seed);
    let mut losses = Vec::new();
    for step in 0..6 {
        let x = cpu
            .from_host(Shape::new([6, 2, 8, 8]), &random_vec(6 * 128, 100 + step))
            .unwrap();
        let labels = cpu
            .from_host(Shape::new([6]), &[0., 1., 2., 0., 1., 2.])
            .unwrap();
        let (mask, _) = DropPath::PAPER.sample(&cfg, &mut rng);
        let (loss, _) = net
            .train_step(&cpu, &x, &labels, &mask, rng.next_u64(), &mut sgd)
            .unwrap();
        losses.push(loss.storage[0]);
    }
    (
        losses,
        net.params
            .tensors
            .iter()
            .map(|t| t.storage.clone())
            .collect(),
    )
}

#[test]
fn same_seed_same_bits_different_seed_different_run() {
    let a = short_run(3);
    let b = short_run(3);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    let c = short_run(4);
    assert_ne!(a.0, c.0);
    // and with a different number of threads
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let d = pool.install(|| short_run(3));
    assert_eq!(a.0, d.0);
    assert_eq!(a.1, d.1);
}

#[test]
fn bad_inputs_are_errors() {
    let cpu = Cpu::new();
    let cfg = small(2, 0.0);
    let mut net = Network::new(&cpu, &cfg, 0).unwrap();
    let mask = KeepMask::all(&cfg);
    let wrong = cpu.zeros(&Shape::new([2, 3, 8, 8])).unwrap();
    let e = net
        .forward(
            &cpu,
            &wrong,
            &mask,
            Mode::Eval {
                stats: fractalnet::model::StatsSel::Running,
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("[N, 2, 8, 8]"), "{e}");
    let flat = cpu.zeros(&Shape::new([2, 128])).unwrap();
    assert!(
        net.forward(&cpu, &flat, &mask, Mode::Train { dropout_seed: 0 })
            .is_err()
    );
    let x = cpu.zeros(&Shape::new([2, 2, 8, 8])).unwrap();
    let bad_labels = cpu.from_host(Shape::new([2]), &[0.0, 3.0]).unwrap();
    assert!(
        net.loss_and_grads(&cpu, &x, &bad_labels, &mask, 0, false)
            .is_err()
    );
    let other = KeepMask::all(&small(3, 0.0));
    assert!(
        net.forward(&cpu, &x, &other, Mode::Train { dropout_seed: 0 })
            .is_err()
    );
}
