//! Element-wise ops: add-assign (gradient accumulation), scale, multiply, ReLU and its
//! backward. Both operands must have the same shape; nothing broadcasts.

pub mod cpu;
#[cfg(test)]
mod tests;
