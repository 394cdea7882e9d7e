//! The fractal structure as data.
//!
//! The expansion rule f_1(z) = conv(z), f_{C+1}(z) = join(f_C(f_C(z)), conv(z)) is unrolled
//! into a graph of nodes (units, joins, pools, the classifier) with the indexing of
//! shared/SPEC.md. Drop-path is a [`KeepMask`] over the joins' inputs; [`Plan::liveness`]
//! decides which nodes run under a mask. Training, evaluation of the full network or of one
//! column, calibration and column extraction all use this one plan with different masks.

mod droppath;
mod mask;
#[cfg(test)]
mod tests;

pub use droppath::{DropPath, DropPathSample};
pub use mask::KeepMask;

use crate::error::{Error, Result};
use crate::ops::conv2d::Conv2dParams;
use crate::ops::pool::Pool2dParams;
use serde::{Deserialize, Serialize};

/// What a network is: everything needed to rebuild its plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FractalConfig {
    pub blocks: usize,
    pub columns: usize,
    /// Output channels of each block (B entries).
    pub channels: Vec<usize>,
    pub in_channels: usize,
    pub classes: usize,
    /// [H, W] of the network input.
    pub input_hw: [usize; 2],
    /// Dropout rate of the layers of each block (B entries), applied after the convolution.
    pub dropout: Vec<f32>,
    /// The unit inside the fractal.
    #[serde(default)]
    pub unit: UnitKind,
    /// `Some(layers)`: the plain baseline (one column of `layers` layers per block, no joins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_layers: Option<usize>,
}

/// The layer type placed at every position of the fractal. The plan only needs its
/// input/output channels; `crate::model::unit` implements each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// conv3x3 (pad 1, no bias) -> dropout -> BatchNorm -> ReLU (shared/SPEC.md).
    #[default]
    ConvBnRelu,
    /// conv3x3 (pad 1) + per-channel bias -> ReLU: a `ConvBnRelu` whose evaluation-mode
    /// BatchNorm was folded into the convolution (`crate::model::extract::fold_bn`). For
    /// inference only: it has no BatchNorm to train or calibrate.
    ConvBiasRelu,
}

impl UnitKind {
    pub fn conv_params(&self) -> Conv2dParams {
        match self {
            UnitKind::ConvBnRelu | UnitKind::ConvBiasRelu => Conv2dParams::SAME3X3,
        }
    }
    pub fn kernel(&self) -> usize {
        match self {
            UnitKind::ConvBnRelu | UnitKind::ConvBiasRelu => 3,
        }
    }
}

/// Largest accepted column count: C = 10 already means 1023 layers per block.
pub const MAX_COLUMNS: usize = 10;

impl FractalConfig {
    /// The CIFAR configuration of the paper with `columns` columns and default dropout off.
    pub fn new(columns: usize, channels: Vec<usize>, in_channels: usize, classes: usize) -> Self {
        FractalConfig {
            blocks: channels.len(),
            columns,
            dropout: vec![0.0; channels.len()],
            channels,
            in_channels,
            classes,
            input_hw: [32, 32],
            unit: UnitKind::ConvBnRelu,
            plain_layers: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let c = self;
        if c.columns == 0 || c.columns > MAX_COLUMNS {
            return Err(Error::config(format!("--columns {} is outside 1..={MAX_COLUMNS}", c.columns)));
        }
        if c.blocks == 0 {
            return Err(Error::config("--blocks must be at least 1"));
        }
        if c.channels.len() != c.blocks {
            return Err(Error::config(format!(
                "--channels has {} entries but there are {} blocks",
                c.channels.len(),
                c.blocks
            )));
        }
        if c.channels.contains(&0) {
            return Err(Error::config("--channels entries must be positive"));
        }
        if c.dropout.len() != c.blocks {
            return Err(Error::config(format!(
                "--dropout has {} entries but there are {} blocks",
                c.dropout.len(),
                c.blocks
            )));
        }
        for &d in &c.dropout {
            crate::ops::dropout::check_rate(d)?;
        }
        if c.in_channels == 0 {
            return Err(Error::config("--in-channels must be positive"));
        }
        if c.classes < 2 {
            return Err(Error::config(format!("--classes {} must be at least 2", c.classes)));
        }
        let min = 1usize.checked_shl(c.blocks as u32).unwrap_or(usize::MAX);
        if c.blocks > 30 || c.input_hw[0] < min || c.input_hw[1] < min {
            return Err(Error::config(format!(
                "input {}x{} is too small for {} 2x2 poolings (needs at least {min}x{min})",
                c.input_hw[0], c.input_hw[1], c.blocks
            )));
        }
        if let Some(l) = c.plain_layers {
            if l == 0 || c.columns != 1 {
                return Err(Error::config("a plain network has one column of at least one layer"));
            }
        }
        Ok(())
    }

    /// Layers in the deepest column of one block: D = 2^(C-1) (or the plain depth).
    pub fn deepest(&self) -> usize {
        self.plain_layers.unwrap_or(1 << (self.columns - 1))
    }
    /// Joins per block (the last is the block's final join); 0 for a single column.
    pub fn joins_per_block(&self) -> usize {
        if self.columns == 1 { 0 } else { self.deepest() / 2 }
    }
    /// Rows of the deepest column spanned by one layer of column c: S_c = 2^(C-1-c).
    pub fn span(&self, column: usize) -> usize {
        if self.plain_layers.is_some() { 1 } else { 1 << (self.columns - 1 - column) }
    }
    /// Layers of column c in one block.
    pub fn column_layers(&self, column: usize) -> usize {
        self.deepest() / self.span(column)
    }
    /// Longest path through the network, in layers.
    pub fn depth(&self) -> usize {
        self.blocks * self.deepest()
    }
}

pub type NodeId = usize;

/// One node of the plan. `shape` is per image: [C, H, W], or [K] for the logits.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The (normalised) input images.
    Input,
    /// One fractal layer: index into `Plan::units`.
    Unit(usize),
    /// Join `join` of block `block`; `columns[i]` is the column that `inputs[i]` comes from
    /// (ascending), and the keep-mask decides which of them are active.
    Join {
        block: usize,
        join: usize,
        columns: Vec<usize>,
    },
    MaxPool(Pool2dParams),
    /// Flatten (NCHW order) then the fully connected classifier.
    Classifier,
}

/// Where a unit sits, and what it maps.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitNode {
    pub block: usize,
    pub column: usize,
    pub layer: usize,
    pub cin: usize,
    pub cout: usize,
    pub hw: [usize; 2],
    pub kind: UnitKind,
    pub dropout: f32,
    pub node: NodeId,
}

impl UnitNode {
    /// The tensor-name prefix of shared/SPEC.md: `block{b}.col{c}.layer{l}`.
    pub fn prefix(&self) -> String {
        format!("block{}.col{}.layer{}", self.block, self.column, self.layer)
    }
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub config: FractalConfig,
    pub nodes: Vec<Node>,
    pub units: Vec<UnitNode>,
    /// The classifier node (the logits).
    pub output: NodeId,
    /// Features into the classifier: channels[B-1] * H_B * W_B.
    pub features: usize,
}

/// Which nodes run under a mask, and which inputs each running node reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Liveness {
    pub live: Vec<bool>,
    /// Per node: the inputs it reads (for a join, only the kept ones; empty if dead).
    pub active: Vec<Vec<NodeId>>,
}

impl Liveness {
    pub fn live_units(&self, plan: &Plan) -> Vec<usize> {
        (0..plan.units.len()).filter(|&u| self.live[plan.units[u].node]).collect()
    }
}

impl Plan {
    pub fn new(config: &FractalConfig) -> Result<Plan> {
        config.validate()?;
        let cfg = config.clone();
        let mut plan = Plan { config: cfg.clone(), nodes: Vec::new(), units: Vec::new(), output: 0, features: 0 };
        let mut cur = plan.push(Op::Input, vec![], vec![cfg.in_channels, cfg.input_hw[0], cfg.input_hw[1]]);
        let (mut h, mut w) = (cfg.input_hw[0], cfg.input_hw[1]);
        let mut cin = cfg.in_channels;
        let d = cfg.deepest();
        let cols = cfg.columns;
        for b in 0..cfg.blocks {
            let cout = cfg.channels[b];
            // state[p]: the value at position p of the deepest column (0 = block input).
            let mut state: Vec<NodeId> = vec![cur; d + 1];
            let mut pooled = Vec::with_capacity(cols);
            for p in 1..=d {
                let mut ends = Vec::new(); // (column, unit node) whose layer ends at p
                for c in 0..cols {
                    let s = cfg.span(c);
                    if p % s != 0 {
                        continue;
                    }
                    let l = p / s - 1;
                    let input = state[l * s];
                    let unit = UnitNode {
                        block: b,
                        column: c,
                        layer: l,
                        cin: if l == 0 { cin } else { cout },
                        cout,
                        hw: [h, w],
                        kind: cfg.unit,
                        dropout: cfg.dropout[b],
                        node: plan.nodes.len(),
                    };
                    plan.units.push(unit);
                    let id = plan.push(Op::Unit(plan.units.len() - 1), vec![input], vec![cout, h, w]);
                    ends.push((c, id));
                }
                if p == d {
                    for &(c, id) in &ends {
                        let pool = plan.push(Op::MaxPool(Pool2dParams::HALVE), vec![id], vec![cout, h / 2, w / 2]);
                        pooled.push((c, pool));
                    }
                } else if ends.len() > 1 {
                    let j = p / 2 - 1;
                    state[p] = plan.push(
                        Op::Join { block: b, join: j, columns: ends.iter().map(|e| e.0).collect() },
                        ends.iter().map(|e| e.1).collect(),
                        vec![cout, h, w],
                    );
                } else {
                    state[p] = ends[0].1;
                }
            }
            h /= 2;
            w /= 2;
            cur = if pooled.len() == 1 {
                pooled[0].1
            } else {
                plan.push(
                    Op::Join { block: b, join: d / 2 - 1, columns: pooled.iter().map(|e| e.0).collect() },
                    pooled.iter().map(|e| e.1).collect(),
                    vec![cout, h, w],
                )
            };
            cin = cout;
        }
        plan.features = cin * h * w;
        plan.output = plan.push(Op::Classifier, vec![cur], vec![cfg.classes]);
        Ok(plan)
    }

    fn push(&mut self, op: Op, inputs: Vec<NodeId>, shape: Vec<usize>) -> NodeId {
        self.nodes.push(Node { op, inputs, shape });
        self.nodes.len() - 1
    }

    pub fn unit(&self, block: usize, column: usize, layer: usize) -> Option<&UnitNode> {
        self.units.iter().find(|u| u.block == block && u.column == column && u.layer == layer)
    }

    /// Which nodes run under `mask`: walking back from the classifier, a join reads only its
    /// kept inputs; a node no live node reads is dead. A live join with no kept input is an
    /// error (the sampler never produces one; a hand-made mask might).
    pub fn liveness(&self, mask: &KeepMask) -> Result<Liveness> {
        mask.check_fits(&self.config)?;
        let n = self.nodes.len();
        let mut live = vec![false; n];
        let mut active = vec![Vec::new(); n];
        live[self.output] = true;
        for i in (0..n).rev() {
            if !live[i] {
                continue;
            }
            let node = &self.nodes[i];
            let act: Vec<NodeId> = match &node.op {
                Op::Join { block, join, columns } => {
                    let kept: Vec<NodeId> = node
                        .inputs
                        .iter()
                        .zip(columns)
                        .filter(|&(_, &c)| mask.keep(*block, *join, c))
                        .map(|(&id, _)| id)
                        .collect();
                    if kept.is_empty() {
                        return Err(Error::mask(format!(
                            "join {join} of block {block} is needed but none of its inputs (columns {columns:?}) is kept"
                        )));
                    }
                    kept
                }
                _ => node.inputs.clone(),
            };
            for &a in &act {
                live[a] = true;
            }
            active[i] = act;
        }
        Ok(Liveness { live, active })
    }
}
