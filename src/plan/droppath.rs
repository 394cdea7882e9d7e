use super::{FractalConfig, KeepMask};
use crate::rng::SeededRng;

/// Drop-path (shared/SPEC.md): per mini-batch, with probability `global_ratio` a global
/// sample (one column, uniform, for the whole network), otherwise a local one (each join
/// input dropped with probability `local_p`; a join that lost every input keeps one, chosen
/// uniformly).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropPath {
    pub global_ratio: f64,
    pub local_p: f64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropPathSample {
    Global(usize),
    Local,
}

impl DropPath {
    /// The paper's mix: 50% global, 50% local with p = 0.15.
    pub const PAPER: DropPath = DropPath {
        global_ratio: 0.5,
        local_p: 0.15,
    };
    /// No drop-path: every sample keeps all paths.
    pub const NONE: DropPath = DropPath {
        global_ratio: 0.0,
        local_p: 0.0,
    };

    /// One sample for one mini-batch. Draw order: one uniform for global-vs-local; then either
    /// the column (`below(C)`), or for each block, join and participating column (ascending)
    /// one uniform, plus one `below(k)` for each join that lost all k inputs.
    pub fn sample(&self, cfg: &FractalConfig, rng: &mut SeededRng) -> (KeepMask, DropPathSample) {
        let mut mask = KeepMask::all(cfg);
        if cfg.columns == 1 || (self.global_ratio <= 0.0 && self.local_p <= 0.0) {
            return (mask, DropPathSample::Local);
        }
        if rng.uniform_f64() < self.global_ratio {
            let g = rng.below(cfg.columns);
            return (
                KeepMask::column(cfg, g).unwrap_or(mask),
                DropPathSample::Global(g),
            );
        }
        for b in 0..cfg.blocks {
            for j in 0..mask.joins {
                let parts = participants(cfg, j);
                let mut any = false;
                for &c in &parts {
                    let keep = rng.uniform_f64() >= self.local_p;
                    mask.set(b, j, c, keep);
                    any |= keep;
                }
                if !any {
                    let c = parts[rng.below(parts.len())];
                    mask.set(b, j, c, true);
                }
            }
        }
        (mask, DropPathSample::Local)
    }
}

/// Columns whose layer ends at join j's position p = 2(j+1): c >= C-1-t, 2^t the largest
/// power of two dividing p (t at most C-1).
pub fn participants(cfg: &FractalConfig, j: usize) -> Vec<usize> {
    let p = 2 * (j + 1);
    let t = (p.trailing_zeros() as usize).min(cfg.columns - 1);
    (cfg.columns - 1 - t..cfg.columns).collect()
}
