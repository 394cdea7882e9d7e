//! Dropout (inverted): y = x * mask, mask[i] = 1/(1-rate) if u_i >= rate else 0, with
//! u_i = `rng::philox_uniform(seed, i)`. Counter-based, so any backend draws the same mask
//! and the mask never has to be stored to be reproduced. Backward is dy * mask (`mul`).

pub mod cpu;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};

pub fn check_rate(rate: f32) -> Result<()> {
    if !(0.0..1.0).contains(&rate) {
        return Err(Error::config(format!(
            "dropout rate {rate} is outside [0, 1)"
        )));
    }
    Ok(())
}
