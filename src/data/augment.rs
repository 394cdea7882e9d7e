//! Training-time augmentation of a normalised NCHW batch (shared/SPEC.md: augmentation acts
//! on the normalised image, so zero padding pads with the mean).
//!
//! Per image, in batch order, three draws from the rng: `flip = rng.below(2) == 1`, then
//! `dy = rng.below(9) - 4`, then `dx = rng.below(9) - 4`. The image is mirrored horizontally
//! when `flip`, then translated by `(dy, dx)`: `out[y][x] = in[y - dy][x - dx]` (positive dy
//! moves the content down, positive dx to the right), the same for every channel. A source
//! pixel outside the image is
//! - [`Augment::TranslateFlip`] (the paper's "+"): 0, i.e. the channel mean;
//! - [`Augment::Reflect`] ("++"): reflected about the border without repeating the edge
//!   (index -1 reads 1, index W reads W-2, as numpy's `reflect` / PyTorch's `ReflectionPad2d`).
//!
//! Equivalently: pad by 4 (zeros or reflection) and crop at offset `(4 - dy, 4 - dx)`.
//! [`Augment::None`] draws nothing and leaves the batch unchanged.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng::SeededRng;

/// The largest shift, in pixels, in each direction.
pub const MAX_SHIFT: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augment {
    None,
    TranslateFlip,
    Reflect,
}

impl Augment {
    /// `none`, `translate-flip` or `reflect`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Augment::None),
            "translate-flip" => Ok(Augment::TranslateFlip),
            "reflect" => Ok(Augment::Reflect),
            other => Err(Error::config(format!(
                "unknown augmentation '{other}' (accepted: none, translate-flip, reflect)"
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Augment::None => "none",
            Augment::TranslateFlip => "translate-flip",
            Augment::Reflect => "reflect",
        }
    }
}

/// Index `i` reflected into `0..n` (no edge repetition; repeated for shifts beyond the side).
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// Augments `batch` (n images of c x h x w, normalised) in place; see the module docs for the
/// draw order and the padding. Panics unless `batch.len() == n * c * h * w`.
pub fn augment_batch(
    batch: &mut [f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    aug: Augment,
    rng: &mut SeededRng,
) {
    assert_eq!(
        batch.len(),
        n * c * h * w,
        "augment_batch: {} floats for {n}x{c}x{h}x{w}",
        batch.len()
    );
    if aug == Augment::None || batch.is_empty() {
        return;
    }
    let span = 2 * MAX_SHIFT + 1;
    let draws: Vec<(bool, isize, isize)> = (0..n)
        .map(|_| {
            let flip = rng.below(2) == 1;
            let dy = rng.below(span) as isize - MAX_SHIFT as isize;
            let dx = rng.below(span) as isize - MAX_SHIFT as isize;
            (flip, dy, dx)
        })
        .collect();
    let reflect_pad = aug == Augment::Reflect;
    batch
        .par_chunks_mut(c * h * w)
        .zip(draws.par_iter())
        .for_each(|(img, &(flip, dy, dx))| {
            let mut src = vec![0f32; h * w];
            for plane in img.chunks_exact_mut(h * w) {
                src.copy_from_slice(plane);
                for y in 0..h {
                    let sy = y as isize - dy;
                    let sy = if (0..h as isize).contains(&sy) {
                        Some(sy as usize)
                    } else if reflect_pad {
                        Some(reflect(sy, h))
                    } else {
                        None
                    };
                    let row = &mut plane[y * w..(y + 1) * w];
                    let Some(sy) = sy else {
                        row.fill(0.0);
                        continue;
                    };
                    for (x, o) in row.iter_mut().enumerate() {
                        let sx = x as isize - dx;
                        let sx = if (0..w as isize).contains(&sx) {
                            sx as usize
                        } else if reflect_pad {
                            reflect(sx, w)
                        } else {
                            *o = 0.0;
                            continue;
                        };
                        // The flipped image's column sx is the original's column w-1-sx.
                        let sx = if flip { w - 1 - sx } else { sx };
                        *o = src[sy * w + sx];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        let r: Vec<usize> = (-5..10).map(|i| reflect(i, 5)).collect();
        assert_eq!(r, vec![3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0, 1]);
        assert_eq!(reflect(-3, 1), 0);
        assert_eq!(reflect(-1, 2), 1);
        assert_eq!(reflect(2, 2), 0);
    }

    #[test]
    fn parse_round_trips_and_rejects() {
        for a in [Augment::None, Augment::TranslateFlip, Augment::Reflect] {
            assert_eq!(Augment::parse(a.name()).unwrap(), a);
        }
        let e = Augment::parse("crop").unwrap_err().to_string();
        assert!(e.contains("'crop'") && e.contains("translate-flip"), "{e}");
    }
}
