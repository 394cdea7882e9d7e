use super::*;
use crate::rng::SeededRng;

fn cfg(columns: usize, blocks: usize) -> FractalConfig {
    let mut c = FractalConfig::new(columns, (0..blocks).map(|b| 4 + b).collect(), 3, 10);
    c.input_hw = [32, 32];
    c
}

#[test]
fn spec_example_c3_is_wired_as_written() {
    let plan = Plan::new(&cfg(3, 1)).unwrap();
    let unit_node = |c, l| plan.unit(0, c, l).unwrap().node;
    let input_of = |id: NodeId| plan.nodes[id].inputs.clone();
    assert_eq!(plan.units.len(), 7);
    // p1: h1 = L(2,0)(x)
    assert_eq!(input_of(unit_node(2, 0)), vec![0]);
    assert_eq!(input_of(unit_node(1, 0)), vec![0]);
    assert_eq!(input_of(unit_node(0, 0)), vec![0]);
    // p2: J0 = mean(L(2,1)(h1), L(1,0)(x))
    assert_eq!(input_of(unit_node(2, 1)), vec![unit_node(2, 0)]);
    let j0 = input_of(unit_node(2, 2))[0];
    assert_eq!(
        plan.nodes[j0].op,
        Op::Join {
            block: 0,
            join: 0,
            columns: vec![1, 2]
        }
    );
    assert_eq!(input_of(j0), vec![unit_node(1, 0), unit_node(2, 1)]);
    // L(1,1) also reads J0
    assert_eq!(input_of(unit_node(1, 1)), vec![j0]);
    // p3: h3 = L(2,2)(J0); p4: out = mean(pool L(2,3), pool L(1,1), pool L(0,0))
    assert_eq!(input_of(unit_node(2, 3)), vec![unit_node(2, 2)]);
    let out = plan.nodes[plan.output].inputs[0];
    assert_eq!(
        plan.nodes[out].op,
        Op::Join {
            block: 0,
            join: 1,
            columns: vec![0, 1, 2]
        }
    );
    let pools = input_of(out);
    let pooled: Vec<NodeId> = pools
        .iter()
        .map(|&p| {
            assert_eq!(
                plan.nodes[p].op,
                Op::MaxPool(crate::ops::pool::Pool2dParams::HALVE)
            );
            plan.nodes[p].inputs[0]
        })
        .collect();
    assert_eq!(
        pooled,
        vec![unit_node(0, 0), unit_node(1, 1), unit_node(2, 3)]
    );
}

#[test]
fn layer_counts_and_channels_follow_spec() {
    for columns in 1..=6 {
        let c = cfg(columns, 3);
        let plan = Plan::new(&c).unwrap();
        assert_eq!(plan.units.len(), 3 * ((1 << columns) - 1));
        assert_eq!(c.depth(), 3 << (columns - 1));
        for b in 0..3 {
            for col in 0..columns {
                let layers: Vec<_> = plan
                    .units
                    .iter()
                    .filter(|u| u.block == b && u.column == col)
                    .collect();
                assert_eq!(layers.len(), 1 << col);
                for u in layers {
                    let cin = if u.layer > 0 {
                        c.channels[b]
                    } else if b == 0 {
                        3
                    } else {
                        c.channels[b - 1]
                    };
                    assert_eq!((u.cin, u.cout), (cin, c.channels[b]));
                    assert_eq!(u.hw, [32 >> b, 32 >> b]);
                }
            }
        }
        // every join takes the columns SPEC says: c >= C-1-t
        for n in &plan.nodes {
            if let Op::Join {
                join,
                columns: cols,
                ..
            } = &n.op
            {
                let p = 2 * (join + 1);
                let t = (p.trailing_zeros() as usize).min(columns - 1);
                assert_eq!(cols, &(columns - 1 - t..columns).collect::<Vec<_>>());
            }
        }
        assert_eq!(plan.features, c.channels[2] * 4 * 4);
    }
}

/// Liveness of unit (b, c, l) computed straight from SPEC's position formulas, without the
/// graph: the oracle the plan's graph walk is checked against.
#[allow(clippy::needless_range_loop)] // indices are SPEC's (column, layer) positions
fn oracle_live_units(c: &FractalConfig, mask: &KeepMask) -> Vec<(usize, usize, usize)> {
    let cols = c.columns;
    let d = c.deepest();
    let mut live = Vec::new();
    for b in 0..c.blocks {
        let mut needed = vec![false; d + 1]; // state at position p is read by a live unit
        let mut unit_live = vec![vec![false; d]; cols];
        for p in (1..=d).rev() {
            for col in 0..cols {
                let s = c.span(col);
                if p % s != 0 {
                    continue;
                }
                let l = p / s - 1;
                let used = if cols == 1 {
                    p == d || needed[p]
                } else if p == d {
                    mask.keep(b, d / 2 - 1, col)
                } else if p % 2 == 0 {
                    mask.keep(b, p / 2 - 1, col) && needed[p]
                } else {
                    needed[p]
                };
                if used {
                    unit_live[col][l] = true;
                    needed[l * s] = true;
                }
            }
        }
        for col in 0..cols {
            for l in 0..c.column_layers(col) {
                if unit_live[col][l] {
                    live.push((b, col, l));
                }
            }
        }
    }
    live.sort();
    live
}

fn plan_live_units(plan: &Plan, mask: &KeepMask) -> Vec<(usize, usize, usize)> {
    let lv = plan.liveness(mask).unwrap();
    let mut v: Vec<_> = lv
        .live_units(plan)
        .into_iter()
        .map(|u| {
            let u = &plan.units[u];
            (u.block, u.column, u.layer)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_global_column_runs_exactly_its_own_layers() {
    for columns in 1..=6 {
        let c = cfg(columns, 2);
        let plan = Plan::new(&c).unwrap();
        for g in 0..columns {
            let live = plan_live_units(&plan, &KeepMask::column(&c, g).unwrap());
            assert_eq!(live.len(), 2 << g, "C={columns} g={g}");
            assert!(live.iter().all(|&(_, col, _)| col == g));
        }
        let all = plan_live_units(&plan, &KeepMask::all(&c));
        assert_eq!(all.len(), plan.units.len());
    }
}

#[test]
fn local_masks_run_exactly_the_layers_that_reach_a_kept_input() {
    let mut rng = SeededRng::new(5);
    for columns in 2..=5 {
        let c = cfg(columns, 2);
        let plan = Plan::new(&c).unwrap();
        let dp = DropPath {
            global_ratio: 0.0,
            local_p: 0.5,
        };
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..200 {
            let (mask, kind) = dp.sample(&c, &mut rng);
            assert_eq!(kind, DropPathSample::Local);
            let got = plan_live_units(&plan, &mask);
            assert_eq!(
                got,
                oracle_live_units(&c, &mask),
                "C={columns} mask {:?}",
                mask.keep
            );
            distinct.insert(got.len());
        }
        assert!(distinct.len() > 2, "masks should vary");
    }
}

#[test]
fn sampler_keeps_one_input_per_join_and_mixes_as_asked() {
    let c = cfg(4, 3);
    let mut rng = SeededRng::new(9);
    let mut globals = vec![0usize; 4];
    let (mut dropped, mut total) = (0usize, 0usize);
    for _ in 0..4000 {
        let (mask, kind) = DropPath::PAPER.sample(&c, &mut rng);
        match kind {
            DropPathSample::Global(g) => {
                globals[g] += 1;
                assert_eq!(mask, KeepMask::column(&c, g).unwrap());
            }
            DropPathSample::Local => {
                for b in 0..3 {
                    for j in 0..mask.joins {
                        let parts = droppath::participants(&c, j);
                        let kept = parts.iter().filter(|&&col| mask.keep(b, j, col)).count();
                        assert!(kept >= 1);
                        dropped += parts.len() - kept;
                        total += parts.len();
                    }
                }
            }
        }
    }
    let g: usize = globals.iter().sum();
    assert!((1800..2200).contains(&g), "global share {g}/4000");
    assert!(globals.iter().all(|&n| n > 400), "{globals:?}");
    let p = dropped as f64 / total as f64;
    // 0.15 minus the rare forced keeps of joins that lost every input
    assert!((0.13..0.16).contains(&p), "local drop rate {p}");
    // same seed, same samples
    let (mut a, mut b) = (SeededRng::new(3), SeededRng::new(3));
    for _ in 0..50 {
        assert_eq!(
            DropPath::PAPER.sample(&c, &mut a),
            DropPath::PAPER.sample(&c, &mut b)
        );
    }
}

#[test]
fn bad_configs_and_masks_are_errors_not_panics() {
    let mut c = cfg(0, 2);
    assert!(
        Plan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("--columns 0")
    );
    c = cfg(3, 2);
    c.channels = vec![4, 4, 4];
    assert!(
        Plan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("--channels has 3 entries")
    );
    c = cfg(3, 6);
    assert!(
        Plan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("too small for 6")
    );
    c = cfg(3, 2);
    c.dropout = vec![0.1];
    assert!(Plan::new(&c).is_err());
    c.dropout = vec![0.1, 1.5];
    assert!(Plan::new(&c).is_err());
    c = cfg(3, 2);
    c.classes = 1;
    assert!(Plan::new(&c).is_err());
    c = cfg(3, 2);
    c.channels[1] = 0;
    assert!(Plan::new(&c).is_err());
    c = cfg(3, 2);
    assert!(
        KeepMask::column(&c, 3)
            .unwrap_err()
            .to_string()
            .contains("--column 3")
    );
    let plan = Plan::new(&c).unwrap();
    let wrong = KeepMask::all(&cfg(4, 2));
    assert!(plan.liveness(&wrong).is_err());
    let mut starved = KeepMask::all(&c);
    for col in 0..3 {
        starved.set(1, 1, col, false);
    }
    let e = plan.liveness(&starved).unwrap_err().to_string();
    assert!(e.contains("join 1 of block 1"), "{e}");
}

#[test]
fn plain_network_is_one_column_without_joins() {
    let mut c = cfg(1, 2);
    c.plain_layers = Some(4);
    let plan = Plan::new(&c).unwrap();
    assert_eq!(plan.units.len(), 8);
    assert!(plan.nodes.iter().all(|n| !matches!(n.op, Op::Join { .. })));
    assert_eq!(c.depth(), 8);
    for u in &plan.units {
        if u.layer > 0 {
            assert_eq!(
                plan.nodes[u.node].inputs,
                vec![plan.unit(u.block, 0, u.layer - 1).unwrap().node]
            );
        }
    }
}

#[test]
fn thin_columns_enter_their_joins_through_projections() {
    let mut c = cfg(3, 2);
    c.channels = vec![8, 8];
    c.column_widths = Some(vec![8, 4, 2]);
    c.unit = UnitKind::Mixed;
    let plan = Plan::new(&c).unwrap();
    let node_of = |c, l| plan.unit(0, c, l).unwrap().node;
    // join 0 of block 0 reads the projections of columns 1 and 2, each fed by its column's layer
    let j0 = plan.nodes[node_of(2, 2)].inputs[0];
    assert_eq!(
        plan.nodes[j0].op,
        Op::Join {
            block: 0,
            join: 0,
            columns: vec![1, 2]
        }
    );
    for (&p, (col, l)) in plan.nodes[j0].inputs.iter().zip([(1, 0), (2, 1)]) {
        let Op::Unit(u) = plan.nodes[p].op else {
            panic!("join input is not a projection")
        };
        let u = &plan.units[u];
        assert_eq!(
            (u.site, u.prefix(), u.cin, u.cout, u.kind),
            (
                Site::Projection,
                format!("block0.col{col}.proj0"),
                c.column_width(0, col),
                8,
                UnitOp::CONV1X1
            )
        );
        assert_eq!(plan.nodes[p].inputs, vec![node_of(col, l)]);
    }
    // the deepest column reads its own (thin) output at odd positions, a join at even ones
    assert_eq!(plan.unit(0, 2, 1).unwrap().cin, 2);
    assert_eq!(plan.unit(0, 2, 2).unwrap().cin, 8);
    // final join: pooled, then projected; column 0 is already at the join's width
    let out = plan.nodes[plan.output].inputs[0];
    let finals = &plan.nodes[out].inputs;
    assert!(matches!(plan.nodes[finals[0]].op, Op::MaxPool(_)));
    for &f in &finals[1..] {
        let Op::Unit(u) = plan.nodes[f].op else {
            panic!("not projected")
        };
        assert_eq!(plan.units[u].layer, 1);
        assert!(matches!(
            plan.nodes[plan.nodes[f].inputs[0]].op,
            Op::MaxPool(_)
        ));
    }
    // mixed: 3x3 at even layers of a column, 1x1 at odd ones; block 1 (the last) keeps widths
    assert_eq!(plan.unit(1, 2, 3).unwrap().kind, UnitOp::CONV1X1);
    assert_eq!(plan.unit(1, 2, 2).unwrap().kind, UnitOp::CONV3X3);
    assert_eq!(plan.unit(1, 1, 0).unwrap().cout, 4);
    // dropping column 2's input to join 0 kills its projection and the layers that fed only
    // it (L(2,0), L(2,1)); L(2,2) still reads join 0 through column 1
    let mut mask = KeepMask::all(&c);
    mask.set(0, 0, 2, false);
    let live = plan.liveness(&mask).unwrap();
    let proj = plan.nodes[j0].inputs[1];
    assert!(!live.live[proj] && !live.live[node_of(2, 1)] && !live.live[node_of(2, 0)]);
    assert!(live.live[plan.nodes[j0].inputs[0]] && live.live[node_of(2, 2)]);
}

#[test]
fn fractalnet34_plan_has_stem_unpooled_last_block_and_global_pooling() {
    let c = FractalConfig::fractalnet34(1000);
    let plan = Plan::new(&c).unwrap();
    let stem = &plan.units[0];
    assert_eq!(
        (stem.site, stem.prefix(), stem.cin, stem.cout, stem.kind),
        (Site::Stem, "stem".into(), 3, 64, UnitOp::STEM)
    );
    assert_eq!(plan.nodes[stem.node].shape, vec![64, 112, 112]);
    assert_eq!(
        plan.nodes[stem.node + 1].op,
        Op::MaxPool(crate::ops::pool::Pool2dParams::STEM)
    );
    assert_eq!(plan.nodes[stem.node + 1].shape, vec![64, 56, 56]);
    for (b, hw) in [56, 28, 14, 7].into_iter().enumerate() {
        assert_eq!(plan.unit(b, 3, 0).unwrap().hw, [hw, hw]);
    }
    let pools = plan
        .nodes
        .iter()
        .filter(|n| n.op == Op::MaxPool(crate::ops::pool::Pool2dParams::HALVE))
        .count();
    assert_eq!(pools, 3 * 4, "every column of blocks 0..2, none in block 3");
    let gap = plan.nodes[plan.output].inputs[0];
    assert_eq!(
        (&plan.nodes[gap].op, &plan.nodes[gap].shape),
        (&Op::GlobalAvgPool, &vec![1024, 1, 1])
    );
    // any size the stem and poolings allow; a clear error below
    for (hw, ok) in [(224, true), (32, true), (29, true), (28, false), (64, true)] {
        let mut c = c.clone();
        c.input_hw = [hw, hw];
        assert_eq!(Plan::new(&c).is_ok(), ok, "{hw}");
    }
}

#[test]
fn fractalnet34_minimum_input_is_what_the_error_says() {
    for blocks in 1..=5 {
        let mut c = FractalConfig::fractalnet34(10);
        c.channels = vec![4; blocks];
        c.dropout = vec![0.0; blocks];
        c.blocks = blocks;
        let min = (1..200).find(|&n| {
            c.input_hw = [n, n];
            Plan::new(&c).is_ok()
        });
        c.input_hw = [1, 1];
        let e = if blocks == 1 {
            None
        } else {
            Some(Plan::new(&c).unwrap_err().to_string())
        };
        let min = min.unwrap();
        assert_eq!(min, 4 * (1 << (blocks - 1)) - 3);
        if let Some(e) = e {
            assert!(e.contains(&format!("at least {min}x{min}")), "{e}");
        }
    }
}
