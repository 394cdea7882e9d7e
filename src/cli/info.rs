use super::{CliResult, parse_hw};
use fractalnet::model::stats::stats;
use fractalnet::plan::Plan;

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    net: super::arch::ArchArgs,
    /// Blocks B (default: the length of --channels).
    #[arg(long)]
    blocks: Option<usize>,
    /// Classes K.
    #[arg(long)]
    classes: usize,
    #[arg(long, default_value_t = 3)]
    in_channels: usize,
    /// Input size H,W (default 32,32; 224,224 for --arch fractalnet34).
    #[arg(long)]
    input_hw: Option<String>,
    /// Batch size for the training-memory figure.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InfoArgs) -> CliResult<()> {
    let mut cfg = a.net.base(None, a.in_channels, a.classes)?;
    cfg.blocks = a.blocks.unwrap_or(cfg.channels.len());
    cfg.dropout = vec![0.0; cfg.blocks];
    if let Some(hw) = &a.input_hw {
        cfg.input_hw = parse_hw(hw)?;
    }
    let plan = Plan::new(&cfg)?;
    let s = stats(&plan, a.batch_size);
    if a.json {
        let mut v = serde_json::to_value(&s).map_err(|e| super::CliError::Usage(e.to_string()))?;
        v["config"] =
            serde_json::to_value(&cfg).map_err(|e| super::CliError::Usage(e.to_string()))?;
        println!("{v}");
        return Ok(());
    }
    let ch: Vec<String> = cfg.channels.iter().map(|c| c.to_string()).collect();
    println!(
        "FractalNet: C = {}, B = {}, channels {}, input {}x{}x{}, {} classes",
        cfg.columns,
        cfg.blocks,
        ch.join(","),
        cfg.in_channels,
        cfg.input_hw[0],
        cfg.input_hw[1],
        cfg.classes
    );
    if let Some(line) = super::arch::describe(&cfg) {
        println!("  {line}");
    }
    println!(
        "  parameters        {} trainable ({} BN statistics besides)",
        group(s.params),
        group(s.buffers)
    );
    println!(
        "  depth             {} layers ({} per block in the deepest column); {} layers per block, {} in all",
        s.depth,
        cfg.deepest(),
        s.layers_per_block,
        s.layers
    );
    println!("  joins per block   {}", s.joins_per_block);
    println!(
        "  forward FLOPs     {:.3} GFLOP per image (full network)",
        s.flops_per_image as f64 / 1e9
    );
    for (c, f) in s.column_flops_per_image.iter().enumerate() {
        println!(
            "    column {c}        {:.3} GFLOP per image ({} layers deep)",
            *f as f64 / 1e9,
            cfg.blocks << c
        );
    }
    println!(
        "  training memory   {:.1} MiB of activations kept for backward at batch {}",
        s.train_activation_bytes as f64 / (1 << 20) as f64,
        s.batch_size
    );
    Ok(())
}

/// 2125204 -> "2,125,204".
pub fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
