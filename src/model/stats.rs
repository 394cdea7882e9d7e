//! Static figures of a network, computed from its plan (no tensors allocated): what
//! `fractalnet info` reports.

use super::param_specs;
use crate::plan::{Op, Plan, Site};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct NetworkStats {
    /// Trainable scalars: conv weights, BN gamma and beta, FC weight and bias.
    pub params: usize,
    /// BN running statistics (and the per-column pairs of precise BN), not trained.
    pub buffers: usize,
    /// Longest path in layers: B * 2^(C-1) (+ 1 for a stem).
    pub depth: usize,
    pub layers_per_block: usize,
    pub layers: usize,
    pub joins_per_block: usize,
    /// Forward FLOPs per image of the full network: 2 per multiply-add of the convolutions
    /// (stem and projections included) and the classifier (BatchNorm, ReLU, pooling and
    /// joins add under 1% and are left out).
    pub flops_per_image: usize,
    /// Per column alone (global mask): FLOPs per image and trainable parameters used.
    pub column_flops_per_image: Vec<usize>,
    /// Bytes of the activations a training step keeps for its backward pass at `batch_size`
    /// with every path active (inputs, unit outputs and BN inputs, dropout masks, joins,
    /// pools, logits), f32.
    pub train_activation_bytes: usize,
    pub batch_size: usize,
}

fn unit_flops(plan: &Plan, u: usize) -> usize {
    plan.units[u].stages().iter().map(|s| 2 * s.macs()).sum()
}

pub fn stats(plan: &Plan, batch_size: usize) -> NetworkStats {
    let cfg = &plan.config;
    let specs = param_specs(plan);
    let params = specs
        .iter()
        .filter(|s| s.role.trainable())
        .map(|s| s.shape.numel())
        .sum();
    let buffers = specs
        .iter()
        .filter(|s| !s.role.trainable())
        .map(|s| s.shape.numel())
        .sum();
    let fc = 2 * plan.features * cfg.classes;
    let flops = (0..plan.units.len())
        .map(|u| unit_flops(plan, u))
        .sum::<usize>()
        + fc;
    let column_flops = (0..cfg.columns)
        .map(|c| {
            (0..plan.units.len())
                .filter(|&u| plan.units[u].in_column(c))
                .map(|u| unit_flops(plan, u))
                .sum::<usize>()
                + fc
        })
        .collect();
    let mut floats = 0usize;
    for n in &plan.nodes {
        let sz: usize = n.shape.iter().product();
        floats += match &n.op {
            // per stage: output + BN input, + dropout mask
            Op::Unit(u) => plan.units[*u]
                .stages()
                .iter()
                .map(|s| s.cout * s.hw_out[0] * s.hw_out[1] * if s.dropout > 0.0 { 3 } else { 2 })
                .sum(),
            _ => sz,
        };
    }
    let layers = plan.units.iter().filter(|u| u.site == Site::Layer).count();
    let layers_per_block = layers / cfg.blocks;
    NetworkStats {
        params,
        buffers,
        depth: cfg.depth() + usize::from(plan.units.iter().any(|u| u.site == Site::Stem)),
        layers_per_block,
        layers,
        joins_per_block: cfg.joins_per_block(),
        flops_per_image: flops,
        column_flops_per_image: column_flops,
        train_activation_bytes: floats * batch_size * 4,
        batch_size,
    }
}
