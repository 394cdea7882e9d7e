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
    /// What surrounds the fractal blocks. Absent in files of the CIFAR network, which is the
    /// default, so those files load (and are written) unchanged.
    #[serde(default, skip_serializing_if = "Arch::is_cifar")]
    pub arch: Arch,
    /// Output channels of the stem (`Arch::Fractalnet34` only; ResNet-34's is 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem_channels: Option<usize>,
    /// Thin columns: the width of columns 0..C-1 in block 0, doubled each block except the
    /// last (width(b, c) = column_widths[c] * 2^min(b, B-2)). The joins of block b keep
    /// `channels[b]`: a column of another width goes through a 1x1 projection before each
    /// join it enters. `None`: every column is `channels[b]` wide (shared/SPEC.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_widths: Option<Vec<usize>>,
}

/// The network around the fractal blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// shared/SPEC.md's CIFAR network: the blocks on the input, each block's columns
    /// max-pooled 2x2 before its final join, flatten, fully connected.
    #[default]
    Cifar,
    /// The paper's ImageNet model (Table 2): ResNet-34's first and last layer around the
    /// blocks. Stem = conv7x7 stride 2 pad 3 -> BN -> ReLU -> max-pool 3x3 stride 2 pad 1;
    /// blocks separated by the 2x2 poolings (none after the last block, so 224x224 input
    /// ends at 7x7, as in ResNet-34); head = global average pooling -> fully connected.
    Fractalnet34,
}

impl Arch {
    pub fn is_cifar(&self) -> bool {
        *self == Arch::Cifar
    }
    pub fn parse(s: &str) -> Result<Arch> {
        match s {
            "cifar" => Ok(Arch::Cifar),
            "fractalnet34" => Ok(Arch::Fractalnet34),
            _ => Err(Error::config(format!(
                "--arch '{s}' is not one of cifar, fractalnet34"
            ))),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Cifar => "cifar",
            Arch::Fractalnet34 => "fractalnet34",
        }
    }
}

/// The stem of FractalNet-34 (ResNet's): its convolution and the pooling after it.
pub const STEM_CONV: Conv2dParams = Conv2dParams { stride: 2, pad: 3 };
pub const STEM_KERNEL: usize = 7;

/// The layer type placed at the positions of the fractal (the config's choice). The plan
/// resolves it per position into a [`UnitOp`]; `crate::model::unit` implements each op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// conv3x3 (pad 1, no bias) -> dropout -> BatchNorm -> ReLU (shared/SPEC.md).
    #[default]
    ConvBnRelu,
    /// The same layer with a 1x1 convolution.
    Conv1x1,
    /// 3x3 and 1x1 layers mixed (the paper's thin 40-layer net mixes both; where each goes
    /// is this engine's choice): layer l of every column is 3x3 when l is even, 1x1 when odd,
    /// so every column starts with a 3x3.
    Mixed,
    /// conv1x1 (Cin -> m) -> BN -> ReLU -> conv3x3 (m -> m) -> BN -> ReLU -> conv1x1 (m -> Cout)
    /// -> dropout -> BN -> ReLU, m = max(Cout / 4, 1) (ResNet's bottleneck without the
    /// shortcut; dropout where the plain layer has it, before the unit's last BN).
    Bottleneck,
    /// conv3x3 (pad 1) + per-channel bias -> ReLU: a `ConvBnRelu` whose evaluation-mode
    /// BatchNorm was folded into the convolution (`crate::model::extract::fold_bn`). For
    /// inference only: it has no BatchNorm to train or calibrate.
    ConvBiasRelu,
}

impl UnitKind {
    /// The `--unit` names.
    pub const NAMES: &'static str = "conv3x3, conv1x1, mixed, bottleneck";

    pub fn parse(s: &str) -> Result<UnitKind> {
        match s {
            "conv3x3" | "conv_bn_relu" => Ok(UnitKind::ConvBnRelu),
            "conv1x1" => Ok(UnitKind::Conv1x1),
            "mixed" => Ok(UnitKind::Mixed),
            "bottleneck" => Ok(UnitKind::Bottleneck),
            _ => Err(Error::config(format!(
                "--unit '{s}' is not one of {}",
                Self::NAMES
            ))),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            UnitKind::ConvBnRelu => "conv3x3",
            UnitKind::Conv1x1 => "conv1x1",
            UnitKind::Mixed => "mixed",
            UnitKind::Bottleneck => "bottleneck",
            UnitKind::ConvBiasRelu => "conv_bias_relu",
        }
    }
    /// The op at layer `layer` of a column.
    pub fn at(&self, layer: usize) -> UnitOp {
        match self {
            UnitKind::ConvBnRelu => UnitOp::CONV3X3,
            UnitKind::Conv1x1 => UnitOp::CONV1X1,
            UnitKind::Mixed if layer % 2 == 1 => UnitOp::CONV1X1,
            UnitKind::Mixed => UnitOp::CONV3X3,
            UnitKind::Bottleneck => UnitOp::Bottleneck,
            UnitKind::ConvBiasRelu => UnitOp::ConvBiasRelu,
        }
    }
}

/// What one unit of the plan computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitOp {
    /// conv (kernel x kernel, no bias) -> dropout -> BN -> ReLU: tensors `conv.weight`, `bn.*`.
    ConvBnRelu { kernel: usize, conv: Conv2dParams },
    /// Three conv -> BN -> ReLU stages (see `UnitKind::Bottleneck`): tensors `conv1.weight`,
    /// `bn1.*`, `conv2.weight`, `bn2.*`, `conv3.weight`, `bn3.*`.
    Bottleneck,
    /// conv3x3 + bias -> ReLU, inference only (`UnitKind::ConvBiasRelu`): tensors
    /// `conv.weight`, `conv.bias`.
    ConvBiasRelu,
}

impl UnitOp {
    pub const CONV3X3: UnitOp = UnitOp::ConvBnRelu {
        kernel: 3,
        conv: Conv2dParams::SAME3X3,
    };
    pub const CONV1X1: UnitOp = UnitOp::ConvBnRelu {
        kernel: 1,
        conv: Conv2dParams { stride: 1, pad: 0 },
    };
    pub const STEM: UnitOp = UnitOp::ConvBnRelu {
        kernel: STEM_KERNEL,
        conv: STEM_CONV,
    };
}

/// One conv -> (dropout) -> BN -> ReLU stage of a unit. `tag` distinguishes the tensor names
/// of the stages of a multi-stage unit ("" for a single stage: `conv.weight`, `bn.gamma`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvStage {
    pub tag: &'static str,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub conv: Conv2dParams,
    pub hw_in: [usize; 2],
    pub hw_out: [usize; 2],
    /// Dropout rate before this stage's BN.
    pub dropout: f32,
}

impl ConvStage {
    /// Multiply-adds per image.
    pub fn macs(&self) -> usize {
        self.cin * self.kernel * self.kernel * self.cout * self.hw_out[0] * self.hw_out[1]
    }
}

/// Output length of a convolution along an axis of `n` pixels (None if the kernel does not fit).
pub fn conv_out_len(n: usize, kernel: usize, p: Conv2dParams) -> Option<usize> {
    (n + 2 * p.pad)
        .checked_sub(kernel)
        .map(|r| r / p.stride + 1)
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
            arch: Arch::Cifar,
            stem_channels: None,
            column_widths: None,
        }
    }

    /// The paper's ImageNet model, FractalNet-34 (Table 2): the stem of ResNet-34 (64
    /// channels), B = 4 blocks of C = 4 columns with 128, 256, 512, 1024 channels, global
    /// average pooling, `classes` outputs, 224x224 RGB input.
    pub fn fractalnet34(classes: usize) -> Self {
        let mut c = Self::new(4, vec![128, 256, 512, 1024], 3, classes);
        c.arch = Arch::Fractalnet34;
        c.stem_channels = Some(64);
        c.input_hw = [224, 224];
        c
    }

    pub fn validate(&self) -> Result<()> {
        let c = self;
        if c.columns == 0 || c.columns > MAX_COLUMNS {
            return Err(Error::config(format!(
                "--columns {} is outside 1..={MAX_COLUMNS}",
                c.columns
            )));
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
            return Err(Error::config(format!(
                "--classes {} must be at least 2",
                c.classes
            )));
        }
        match c.arch {
            Arch::Cifar => {
                let min = 1usize.checked_shl(c.blocks as u32).unwrap_or(usize::MAX);
                if c.blocks > 30 || c.input_hw[0] < min || c.input_hw[1] < min {
                    return Err(Error::config(format!(
                        "input {}x{} is too small for {} 2x2 poolings (needs at least {min}x{min})",
                        c.input_hw[0], c.input_hw[1], c.blocks
                    )));
                }
                if c.stem_channels.is_some() {
                    return Err(Error::config(
                        "--stem-channels is only for --arch fractalnet34",
                    ));
                }
            }
            Arch::Fractalnet34 => {
                if c.stem_channels.is_none_or(|s| s == 0) {
                    return Err(Error::config(
                        "--stem-channels must be positive for --arch fractalnet34",
                    ));
                }
                if c.blocks > 30 || c.block_input_hw().is_none() {
                    // m pixels after the stem survive B-1 halvings; the stem's two stride-2
                    // stages give ceil(ceil(H/2)/2) >= m iff H >= 4m - 3
                    let min = 4 * (1usize << c.blocks.saturating_sub(1).min(30)) - 3;
                    return Err(Error::config(format!(
                        "--input-hw {}x{} is too small for fractalnet34: its stem and {} 2x2 poolings need at least {min}x{min}",
                        c.input_hw[0],
                        c.input_hw[1],
                        c.blocks - 1
                    )));
                }
            }
        }
        if let Some(l) = c.plain_layers
            && (l == 0 || c.columns != 1)
        {
            return Err(Error::config(
                "a plain network has one column of at least one layer",
            ));
        }
        if let Some(widths) = &c.column_widths {
            if widths.len() != c.columns {
                return Err(Error::config(format!(
                    "--column-widths has {} entries but there are {} columns",
                    widths.len(),
                    c.columns
                )));
            }
            if c.columns < 2 || c.plain_layers.is_some() {
                return Err(Error::config(
                    "--column-widths needs at least 2 columns (and no --plain)",
                ));
            }
            if widths.contains(&0) {
                return Err(Error::config("--column-widths entries must be positive"));
            }
            if c.blocks > 30 {
                return Err(Error::config(
                    "--column-widths: too many blocks to double the widths",
                ));
            }
        }
        Ok(())
    }

    /// Whether the columns of block b are max-pooled 2x2 before its final join.
    pub fn block_pools(&self, block: usize) -> bool {
        match self.arch {
            Arch::Cifar => true,
            Arch::Fractalnet34 => block + 1 < self.blocks,
        }
    }

    /// [H, W] entering block 0 and each later block, if every stage fits: after the stem
    /// (if any), then after each pooling block. None if some window does not fit.
    fn block_input_hw(&self) -> Option<Vec<[usize; 2]>> {
        let mut hw = self.input_hw;
        if self.arch == Arch::Fractalnet34 {
            for n in &mut hw {
                *n = conv_out_len(*n, STEM_KERNEL, STEM_CONV)
                    .and_then(|n| Pool2dParams::STEM.out_len(n))?;
            }
        }
        let mut out = vec![hw];
        for b in 0..self.blocks {
            if self.block_pools(b) {
                hw = [
                    Pool2dParams::HALVE.out_len(hw[0])?,
                    Pool2dParams::HALVE.out_len(hw[1])?,
                ];
            }
            out.push(hw);
        }
        out.iter().all(|hw| hw[0] > 0 && hw[1] > 0).then_some(out)
    }

    /// Output channels of the layers of column c in block b.
    pub fn column_width(&self, block: usize, column: usize) -> usize {
        match &self.column_widths {
            Some(w) => w[column] << block.min(self.blocks.saturating_sub(2)),
            None => self.channels[block],
        }
    }

    /// Layers in the deepest column of one block: D = 2^(C-1) (or the plain depth).
    pub fn deepest(&self) -> usize {
        self.plain_layers.unwrap_or(1 << (self.columns - 1))
    }
    /// Joins per block (the last is the block's final join); 0 for a single column.
    pub fn joins_per_block(&self) -> usize {
        if self.columns == 1 {
            0
        } else {
            self.deepest() / 2
        }
    }
    /// Rows of the deepest column spanned by one layer of column c: S_c = 2^(C-1-c).
    pub fn span(&self, column: usize) -> usize {
        if self.plain_layers.is_some() {
            1
        } else {
            1 << (self.columns - 1 - column)
        }
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
    /// Mean over H and W: [C, H, W] -> [C, 1, 1] (FractalNet-34's head).
    GlobalAvgPool,
    /// Flatten (NCHW order) then the fully connected classifier.
    Classifier,
}

/// What a unit is in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// Layer `UnitNode::layer` of a column of the fractal.
    Layer,
    /// The 1x1 projection that brings a thin column to its join's width, before join
    /// `UnitNode::layer` (the join's index in the block).
    Projection,
    /// FractalNet-34's stem: before every column, part of every sub-network.
    Stem,
}

/// Where a unit sits, and what it maps.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitNode {
    pub site: Site,
    pub block: usize,
    pub column: usize,
    /// The layer's index in its column; for a projection, the index of the join it feeds.
    pub layer: usize,
    pub cin: usize,
    pub cout: usize,
    /// [H, W] of the unit's input.
    pub hw: [usize; 2],
    pub kind: UnitOp,
    pub dropout: f32,
    pub node: NodeId,
}

impl UnitNode {
    /// The tensor-name prefix: `block{b}.col{c}.layer{l}` (shared/SPEC.md),
    /// `block{b}.col{c}.proj{j}` or `stem` (docs/FORMAT.md).
    pub fn prefix(&self) -> String {
        match self.site {
            Site::Layer => format!("block{}.col{}.layer{}", self.block, self.column, self.layer),
            Site::Projection => {
                format!("block{}.col{}.proj{}", self.block, self.column, self.layer)
            }
            Site::Stem => "stem".into(),
        }
    }

    /// Whether the unit runs when column g runs alone (the stem runs in every column).
    pub fn in_column(&self, g: usize) -> bool {
        self.site == Site::Stem || self.column == g
    }

    /// The unit's conv -> BN -> ReLU stages, in order.
    pub fn stages(&self) -> Vec<ConvStage> {
        let stage = |tag, cin, cout, kernel, conv: Conv2dParams, hw_in: [usize; 2], dropout| {
            let out = |n| conv_out_len(n, kernel, conv).unwrap_or(0);
            ConvStage {
                tag,
                cin,
                cout,
                kernel,
                conv,
                hw_in,
                hw_out: [out(hw_in[0]), out(hw_in[1])],
                dropout,
            }
        };
        match self.kind {
            UnitOp::ConvBiasRelu => vec![stage(
                "",
                self.cin,
                self.cout,
                3,
                Conv2dParams::SAME3X3,
                self.hw,
                0.0,
            )],
            UnitOp::ConvBnRelu { kernel, conv } => vec![stage(
                "",
                self.cin,
                self.cout,
                kernel,
                conv,
                self.hw,
                self.dropout,
            )],
            UnitOp::Bottleneck => {
                let m = (self.cout / 4).max(1);
                let one = Conv2dParams { stride: 1, pad: 0 };
                vec![
                    stage("1", self.cin, m, 1, one, self.hw, 0.0),
                    stage("2", m, m, 3, Conv2dParams::SAME3X3, self.hw, 0.0),
                    stage("3", m, self.cout, 1, one, self.hw, self.dropout),
                ]
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub config: FractalConfig,
    pub nodes: Vec<Node>,
    pub units: Vec<UnitNode>,
    /// The classifier node (the logits).
    pub output: NodeId,
    /// Features into the classifier: channels[B-1] * H_B * W_B (channels[B-1] after global
    /// average pooling).
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
        (0..plan.units.len())
            .filter(|&u| self.live[plan.units[u].node])
            .collect()
    }
}

impl Plan {
    pub fn new(config: &FractalConfig) -> Result<Plan> {
        config.validate()?;
        let cfg = config.clone();
        let mut plan = Plan {
            config: cfg.clone(),
            nodes: Vec::new(),
            units: Vec::new(),
            output: 0,
            features: 0,
        };
        let mut cur = plan.push(
            Op::Input,
            vec![],
            vec![cfg.in_channels, cfg.input_hw[0], cfg.input_hw[1]],
        );
        let (mut h, mut w) = (cfg.input_hw[0], cfg.input_hw[1]);
        let mut cin = cfg.in_channels;
        if let (Arch::Fractalnet34, Some(sc)) = (cfg.arch, cfg.stem_channels) {
            let stem = UnitNode {
                site: Site::Stem,
                block: 0,
                column: 0,
                layer: 0,
                cin,
                cout: sc,
                hw: [h, w],
                kind: UnitOp::STEM,
                dropout: 0.0,
                node: 0,
            };
            let [ho, wo] = stem.stages()[0].hw_out;
            cur = plan.push_unit(stem, cur, [ho, wo]);
            let p = Pool2dParams::STEM;
            (h, w) = (p.out_len(ho).unwrap_or(0), p.out_len(wo).unwrap_or(0));
            cur = plan.push(Op::MaxPool(p), vec![cur], vec![sc, h, w]);
            cin = sc;
        }
        let d = cfg.deepest();
        let cols = cfg.columns;
        for b in 0..cfg.blocks {
            let cout = cfg.channels[b];
            let pools = cfg.block_pools(b);
            // state[p]: the value at position p of the deepest column (0 = block input), and
            // its channels.
            let mut state: Vec<(NodeId, usize)> = vec![(cur, cin); d + 1];
            let mut finals = Vec::with_capacity(cols);
            for p in 1..=d {
                let mut ends = Vec::new(); // (column, unit node) whose layer ends at p
                for c in 0..cols {
                    let s = cfg.span(c);
                    if p % s != 0 {
                        continue;
                    }
                    let l = p / s - 1;
                    let (input, width_in) = state[l * s];
                    let unit = UnitNode {
                        site: Site::Layer,
                        block: b,
                        column: c,
                        layer: l,
                        cin: width_in,
                        cout: cfg.column_width(b, c),
                        hw: [h, w],
                        kind: cfg.unit.at(l),
                        dropout: cfg.dropout[b],
                        node: 0,
                    };
                    ends.push((c, plan.push_unit(unit, input, [h, w])));
                }
                if p == d {
                    for (c, mut id) in ends {
                        if pools {
                            id = plan.push(
                                Op::MaxPool(Pool2dParams::HALVE),
                                vec![id],
                                vec![cfg.column_width(b, c), h / 2, w / 2],
                            );
                        }
                        finals.push((c, id));
                    }
                } else if ends.len() > 1 {
                    let j = p / 2 - 1;
                    let ins = plan.project(b, j, ends, [h, w]);
                    let id = plan.push(
                        Op::Join {
                            block: b,
                            join: j,
                            columns: ins.iter().map(|e| e.0).collect(),
                        },
                        ins.iter().map(|e| e.1).collect(),
                        vec![cout, h, w],
                    );
                    state[p] = (id, cout);
                } else {
                    state[p] = (ends[0].1, cfg.column_width(b, ends[0].0));
                }
            }
            if pools {
                h /= 2;
                w /= 2;
            }
            cur = if finals.len() == 1 {
                finals[0].1
            } else {
                let ins = plan.project(b, d / 2 - 1, finals, [h, w]);
                plan.push(
                    Op::Join {
                        block: b,
                        join: d / 2 - 1,
                        columns: ins.iter().map(|e| e.0).collect(),
                    },
                    ins.iter().map(|e| e.1).collect(),
                    vec![cout, h, w],
                )
            };
            cin = cout;
        }
        if cfg.arch == Arch::Fractalnet34 {
            cur = plan.push(Op::GlobalAvgPool, vec![cur], vec![cin, 1, 1]);
            (h, w) = (1, 1);
        }
        plan.features = cin * h * w;
        plan.output = plan.push(Op::Classifier, vec![cur], vec![cfg.classes]);
        Ok(plan)
    }

    /// The inputs of join `join` of block b: each column whose width is not the block's goes
    /// through its 1x1 projection first (a unit of that column, so it lives and dies with the
    /// join input it feeds).
    fn project(
        &mut self,
        b: usize,
        join: usize,
        ins: Vec<(usize, NodeId)>,
        hw: [usize; 2],
    ) -> Vec<(usize, NodeId)> {
        let cout = self.config.channels[b];
        ins.into_iter()
            .map(|(c, id)| {
                let width = self.config.column_width(b, c);
                if width == cout {
                    return (c, id);
                }
                let unit = UnitNode {
                    site: Site::Projection,
                    block: b,
                    column: c,
                    layer: join,
                    cin: width,
                    cout,
                    hw,
                    kind: UnitOp::CONV1X1,
                    dropout: 0.0,
                    node: 0,
                };
                (c, self.push_unit(unit, id, hw))
            })
            .collect()
    }

    fn push_unit(&mut self, mut unit: UnitNode, input: NodeId, hw_out: [usize; 2]) -> NodeId {
        unit.node = self.nodes.len();
        let cout = unit.cout;
        self.units.push(unit);
        self.push(
            Op::Unit(self.units.len() - 1),
            vec![input],
            vec![cout, hw_out[0], hw_out[1]],
        )
    }

    fn push(&mut self, op: Op, inputs: Vec<NodeId>, shape: Vec<usize>) -> NodeId {
        self.nodes.push(Node { op, inputs, shape });
        self.nodes.len() - 1
    }

    /// Layer l of column c of block b.
    pub fn unit(&self, block: usize, column: usize, layer: usize) -> Option<&UnitNode> {
        self.units.iter().find(|u| {
            u.site == Site::Layer && u.block == block && u.column == column && u.layer == layer
        })
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
                Op::Join {
                    block,
                    join,
                    columns,
                } => {
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
