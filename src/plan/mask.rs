use super::FractalConfig;
use crate::error::{Error, Result};

/// keep[b, j, c] = true iff the input from column c into join j of block b is kept
/// (shared/SPEC.md). Entries of columns that do not take part in join j are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepMask {
    pub blocks: usize,
    pub joins: usize,
    pub columns: usize,
    pub keep: Vec<bool>,
}

impl KeepMask {
    /// Every path active: the full network.
    pub fn all(cfg: &FractalConfig) -> Self {
        let joins = cfg.joins_per_block();
        KeepMask {
            blocks: cfg.blocks,
            joins,
            columns: cfg.columns,
            keep: vec![true; cfg.blocks * joins * cfg.columns],
        }
    }
    /// Only column g, in every block: the global drop-path sample and single-column evaluation.
    pub fn column(cfg: &FractalConfig, g: usize) -> Result<Self> {
        if g >= cfg.columns {
            return Err(Error::config(format!(
                "--column {g} is out of range: the network has {} columns (0..={})",
                cfg.columns,
                cfg.columns - 1
            )));
        }
        let mut m = Self::all(cfg);
        for (i, k) in m.keep.iter_mut().enumerate() {
            *k = i % cfg.columns == g;
        }
        Ok(m)
    }
    pub fn keep(&self, block: usize, join: usize, column: usize) -> bool {
        self.keep[(block * self.joins + join) * self.columns + column]
    }
    pub fn set(&mut self, block: usize, join: usize, column: usize, v: bool) {
        self.keep[(block * self.joins + join) * self.columns + column] = v;
    }
    pub fn check_fits(&self, cfg: &FractalConfig) -> Result<()> {
        let j = cfg.joins_per_block();
        if self.blocks != cfg.blocks
            || self.joins != j
            || self.columns != cfg.columns
            || self.keep.len() != self.blocks * self.joins * self.columns
        {
            return Err(Error::mask(format!(
                "mask is [{}, {}, {}] but the network needs [{}, {j}, {}]",
                self.blocks, self.joins, self.columns, cfg.blocks, cfg.columns
            )));
        }
        Ok(())
    }
}
