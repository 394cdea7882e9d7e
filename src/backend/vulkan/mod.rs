//! Vulkan compute backend (in progress).
