//! safetensors checkpoints (in progress).
