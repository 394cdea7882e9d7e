//! The flags that choose the network around and inside the fractal blocks (`--arch`,
//! `--stem-channels`, `--column-widths`, `--unit`), shared by `info` and `train`.

use super::{CliError, CliResult, parse_list};
use fractalnet::plan::{Arch, FractalConfig, UnitKind};

#[derive(clap::Args)]
pub struct ArchArgs {
    /// Columns C (the deepest column has 2^(C-1) layers per block). Default: 3 for train
    /// (info requires it), 4 for --arch fractalnet34.
    #[arg(long)]
    columns: Option<usize>,
    /// Output channels per block, e.g. 16,32,64,128,128 (train's default; info requires it),
    /// 128,256,512,1024 for --arch fractalnet34.
    #[arg(long)]
    channels: Option<String>,
    /// cifar (shared/SPEC.md's network) or fractalnet34 (the paper's ImageNet model: ResNet-34's
    /// stem and head around 4 blocks of 4 columns; defaults --columns 4,
    /// --channels 128,256,512,1024, --input-hw 224,224 for info).
    #[arg(long, default_value = "cifar")]
    arch: String,
    /// fractalnet34: output channels of the stem (default 64, ResNet-34's).
    #[arg(long)]
    stem_channels: Option<usize>,
    /// Thin columns: widths of columns 0..C-1 in block 0, doubled each block except the last,
    /// e.g. 128,64,32,16; a column narrower or wider than --channels goes through a 1x1
    /// projection before each join.
    #[arg(long)]
    column_widths: Option<String>,
    /// The unit at each position: conv3x3 (shared/SPEC.md's layer), conv1x1, mixed (3x3 at
    /// even layers of a column, 1x1 at odd ones), bottleneck (1x1, 3x3, 1x1).
    #[arg(long, default_value = "conv3x3")]
    unit: String,
}

impl ArchArgs {
    /// The network these flags describe: `--arch`'s defaults, overridden by `--columns` and
    /// `--channels` when given. `cifar_defaults` stand in for missing `--columns`/`--channels`
    /// of the CIFAR network (None: they are required).
    pub fn base(
        &self,
        cifar_defaults: Option<(usize, &str)>,
        in_channels: usize,
        classes: usize,
    ) -> CliResult<FractalConfig> {
        let arch = Arch::parse(&self.arch)?;
        let columns = self.columns;
        let channels: Option<Vec<usize>> = self
            .channels
            .as_deref()
            .map(|s| parse_list("--channels", s))
            .transpose()?;
        let mut cfg = match arch {
            Arch::Cifar => {
                let (c, ch) = match (columns, channels, cifar_defaults) {
                    (Some(c), Some(ch), _) => (c, ch),
                    (c, ch, Some((dc, dch))) => (
                        c.unwrap_or(dc),
                        ch.map_or_else(|| parse_list("--channels", dch), Ok)?,
                    ),
                    (None, _, None) => {
                        return Err(CliError::Usage(
                            "--columns is required (or --arch fractalnet34)".into(),
                        ));
                    }
                    (_, None, None) => {
                        return Err(CliError::Usage(
                            "--channels is required (or --arch fractalnet34)".into(),
                        ));
                    }
                };
                FractalConfig::new(c, ch, in_channels, classes)
            }
            Arch::Fractalnet34 => {
                let mut cfg = FractalConfig::fractalnet34(classes);
                if let Some(c) = columns {
                    cfg.columns = c;
                }
                if let Some(ch) = channels {
                    cfg.blocks = ch.len();
                    cfg.dropout = vec![0.0; ch.len()];
                    cfg.channels = ch;
                }
                cfg.in_channels = in_channels;
                cfg
            }
        };
        cfg.stem_channels = match (arch, self.stem_channels) {
            (Arch::Cifar, None) => None,
            (Arch::Cifar, Some(_)) => {
                return Err(CliError::Usage(
                    "--stem-channels is only for --arch fractalnet34".into(),
                ));
            }
            (Arch::Fractalnet34, s) => Some(s.unwrap_or(64)),
        };
        cfg.column_widths = self
            .column_widths
            .as_deref()
            .map(|s| parse_list("--column-widths", s))
            .transpose()?;
        cfg.unit = UnitKind::parse(&self.unit)?;
        Ok(cfg)
    }
}

/// One line on what differs from shared/SPEC.md's network, if anything.
pub fn describe(cfg: &FractalConfig) -> Option<String> {
    let mut parts = Vec::new();
    if cfg.arch != Arch::Cifar {
        parts.push(format!(
            "arch {} (stem {} channels, global average pooling)",
            cfg.arch.name(),
            cfg.stem_channels.unwrap_or(0)
        ));
    }
    if let Some(w) = &cfg.column_widths {
        let w: Vec<String> = w.iter().map(|v| v.to_string()).collect();
        parts.push(format!(
            "column widths {} in block 0 (1x1 projections before joins)",
            w.join(",")
        ));
    }
    if cfg.unit != UnitKind::ConvBnRelu {
        parts.push(format!("unit {}", cfg.unit.name()));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}
