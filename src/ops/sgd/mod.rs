//! SGD with momentum and weight decay (shared/SPEC.md):
//! v <- momentum v + (g + wd w); w <- w - lr v.

pub mod cpu;
#[cfg(test)]
mod tests;
