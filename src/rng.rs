//! Every random choice comes from here, seeded, so a CPU run with the same seed is
//! bit-identical, and a run can be resumed exactly from a saved `RngState`.
//!
//! - `SeededRng`: a ChaCha8 stream for sequential choices (init, data order, augmentation,
//!   drop-path). The distributions are written out here (not taken from `rand`) so that the
//!   numbers never change with a dependency upgrade.
//! - `philox_uniform`: a counter-based generator (Philox4x32-10) for per-element choices
//!   (dropout masks): element i of a mask depends only on (seed, i), so a GPU kernel draws
//!   the same mask as the CPU.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub struct SeededRng(ChaCha8Rng);

/// The full position of a `SeededRng`, enough to continue it exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: [u8; 32],
    pub stream: u64,
    /// The word position, as a decimal string (it is a u128).
    pub word_pos: String,
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(ChaCha8Rng::seed_from_u64(seed))
    }
    /// An independent stream derived from this seed and a purpose tag (e.g. init vs data).
    pub fn derived(seed: u64, stream: u64) -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(stream);
        SeededRng(r)
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1) with 24 random bits.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }
    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }
    /// Uniform integer in 0..n (n > 0), without modulo bias (rejection sampling).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
    pub fn state(&self) -> RngState {
        RngState {
            seed: self.0.get_seed(),
            stream: self.0.get_stream(),
            word_pos: self.0.get_word_pos().to_string(),
        }
    }
    pub fn from_state(s: &RngState) -> Option<Self> {
        let pos: u128 = s.word_pos.parse().ok()?;
        let mut r = ChaCha8Rng::from_seed(s.seed);
        r.set_stream(s.stream);
        r.set_word_pos(pos);
        Some(SeededRng(r))
    }
}

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// Philox4x32-10 (Salmon et al., SC'11) of a 128-bit counter under a 64-bit key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let p0 = (PHILOX_M0 as u64) * (c[0] as u64);
        let p1 = (PHILOX_M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The uniform [0, 1) draw (24 bits) for element `i` of the stream keyed by `seed`:
/// counter (i / 4, 0, 0, 0), output word i % 4.
pub fn philox_uniform(seed: u64, i: u64) -> f32 {
    let block = i / 4;
    let out = philox4x32_10(
        [block as u32, (block >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    (out[(i % 4) as usize] >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A well-mixed 64-bit value from two (splitmix64 finaliser), to derive per-layer seeds.
pub fn mix64(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_the_random123_known_answers() {
        // Known-answer vectors from Random123's kat_vectors for philox4x32_10.
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn state_round_trip_continues_the_stream() {
        let mut a = SeededRng::new(42);
        for _ in 0..13 {
            a.next_u32();
        }
        let s = a.state();
        let mut b = SeededRng::from_state(&s).expect("state");
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn below_is_in_range_and_covers() {
        let mut r = SeededRng::new(1);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[r.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
    }
}

/// Stream tags of `SeededRng::derived`: each purpose draws from its own stream of the run's
/// seed, so adding draws to one never shifts another.
pub mod streams {
    pub const INIT: u64 = 1;
    pub const DATA_ORDER: u64 = 2;
    pub const AUGMENT: u64 = 3;
    pub const DROP_PATH: u64 = 4;
    pub const DROPOUT: u64 = 5;
    pub const VALIDATION_SPLIT: u64 = 6;
    pub const CALIBRATION: u64 = 7;
}
