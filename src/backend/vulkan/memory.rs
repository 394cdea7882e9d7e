//! Device memory: buffers sub-allocated by gpu-allocator, recycled through a size-class pool.
//!
//! A `Buffer` returns its memory to the pool when the last reference goes. Work recorded on
//! the GPU holds its own references (see `stream.rs`), so a buffer is never reused while a
//! submitted command may still touch it. Device-local buffers are never mapped: uploads and
//! downloads go through `CpuToGpu` / `GpuToCpu` staging buffers.

use super::{Shared, err};
use crate::error::Result;
use ash::vk;
use gpu_allocator::MemoryLocation;
use gpu_allocator::vulkan::{Allocation, AllocationCreateDesc, AllocationScheme, Allocator};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a buffer lives and what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Place {
    /// Tensors: device-local, storage + transfer source/destination.
    Device,
    /// Uploads: host-visible, written by the host, copied from by the device.
    Upload,
    /// Downloads: host-visible, copied into by the device, read by the host.
    Download,
}

impl Place {
    fn location(self) -> MemoryLocation {
        match self {
            Place::Device => MemoryLocation::GpuOnly,
            Place::Upload => MemoryLocation::CpuToGpu,
            Place::Download => MemoryLocation::GpuToCpu,
        }
    }
    fn usage(self) -> vk::BufferUsageFlags {
        match self {
            Place::Device => {
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::TRANSFER_SRC
                    | vk::BufferUsageFlags::TRANSFER_DST
            }
            Place::Upload => vk::BufferUsageFlags::TRANSFER_SRC,
            Place::Download => vk::BufferUsageFlags::TRANSFER_DST,
        }
    }
}

/// A Vulkan buffer and its memory.
pub(crate) struct RawBuffer {
    pub buffer: vk::Buffer,
    pub allocation: Allocation,
    /// Bytes the buffer was created with (its size class).
    pub capacity: u64,
    pub place: Place,
}

/// The size class a request of `bytes` is rounded up to: multiples of 256 bytes up to 64 KiB,
/// then 2^k, 1.25 2^k, 1.5 2^k or 1.75 2^k (at most 25% waste, few classes).
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(4);
    if bytes <= 65536 {
        return bytes.div_ceil(256) * 256;
    }
    let top = 63 - (bytes - 1).leading_zeros() as u64; // 2^top < bytes <= 2^(top+1)
    let quarter = 1u64 << (top - 2);
    bytes.div_ceil(quarter) * quarter
}

pub(crate) struct Memory {
    allocator: Option<Allocator>,
    free: HashMap<(Place, u64), Vec<RawBuffer>>,
    cached_bytes: u64,
    cache_limit: u64,
    heap_bytes: u64,
}

impl Memory {
    pub fn new(allocator: Allocator, heap_bytes: u64) -> Self {
        Memory {
            allocator: Some(allocator),
            free: HashMap::new(),
            cached_bytes: 0,
            // Keep at most a quarter of the heap (and at least 256 MiB) for reuse.
            cache_limit: (heap_bytes / 4).max(256 << 20),
            heap_bytes,
        }
    }

    /// A buffer of at least `bytes` bytes, from the pool when one of its size class is free.
    pub fn acquire(&mut self, device: &ash::Device, place: Place, bytes: u64) -> Result<RawBuffer> {
        let class = size_class(bytes);
        if let Some(b) = self.free.get_mut(&(place, class)).and_then(|v| v.pop()) {
            self.cached_bytes -= class;
            return Ok(b);
        }
        match self.create(device, place, class) {
            Ok(b) => Ok(b),
            Err(first) => {
                // Out of memory (or fragmented): give the cached buffers back and retry once.
                if self.cached_bytes == 0 {
                    return Err(first);
                }
                self.trim(device, 0);
                self.create(device, place, class)
            }
        }
    }

    fn create(&mut self, device: &ash::Device, place: Place, capacity: u64) -> Result<RawBuffer> {
        let allocator = self
            .allocator
            .as_mut()
            .ok_or_else(|| err("allocator already shut down"))?;
        let info = vk::BufferCreateInfo::default()
            .size(capacity)
            .usage(place.usage())
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: a plain buffer creation on a live device.
        let buffer = unsafe { device.create_buffer(&info, None) }
            .map_err(|e| err(format!("vkCreateBuffer ({capacity} bytes): {e}")))?;
        // SAFETY: `buffer` was just created on this device.
        let requirements = unsafe { device.get_buffer_memory_requirements(buffer) };
        let allocation = match allocator.allocate(&AllocationCreateDesc {
            name: "fractalnet",
            requirements,
            location: place.location(),
            linear: true,
            allocation_scheme: AllocationScheme::GpuAllocatorManaged,
        }) {
            Ok(a) => a,
            Err(e) => {
                // SAFETY: the buffer has no memory bound and is used by nothing.
                unsafe { device.destroy_buffer(buffer, None) };
                let what = match e {
                    gpu_allocator::AllocationError::OutOfMemory => format!(
                        "out of device memory allocating {capacity} bytes ({place:?}; \
                         largest heap {:.2} GiB)",
                        self.heap_bytes as f64 / (1u64 << 30) as f64
                    ),
                    other => format!("allocating {capacity} bytes ({place:?}): {other}"),
                };
                return Err(err(what));
            }
        };
        // SAFETY: the allocation satisfies the buffer's requirements and is not bound elsewhere.
        if let Err(e) =
            unsafe { device.bind_buffer_memory(buffer, allocation.memory(), allocation.offset()) }
        {
            let _ = allocator.free(allocation);
            // SAFETY: as above.
            unsafe { device.destroy_buffer(buffer, None) };
            return Err(err(format!("vkBindBufferMemory: {e}")));
        }
        Ok(RawBuffer {
            buffer,
            allocation,
            capacity,
            place,
        })
    }

    /// Takes back a buffer no command uses any more.
    pub fn release(&mut self, device: &ash::Device, b: RawBuffer) {
        if self.cached_bytes + b.capacity <= self.cache_limit {
            self.cached_bytes += b.capacity;
            self.free.entry((b.place, b.capacity)).or_default().push(b);
        } else {
            self.destroy(device, b);
        }
    }

    fn destroy(&mut self, device: &ash::Device, b: RawBuffer) {
        // SAFETY: the buffer is used by no pending command (the caller's contract).
        unsafe { device.destroy_buffer(b.buffer, None) };
        if let Some(a) = self.allocator.as_mut() {
            let _ = a.free(b.allocation);
        }
    }

    /// Frees cached buffers until at most `keep` bytes stay cached.
    pub fn trim(&mut self, device: &ash::Device, keep: u64) {
        let keys: Vec<(Place, u64)> = self.free.keys().copied().collect();
        for k in keys {
            while self.cached_bytes > keep {
                let Some(b) = self.free.get_mut(&k).and_then(|v| v.pop()) else {
                    break;
                };
                self.cached_bytes -= b.capacity;
                self.destroy(device, b);
            }
        }
        self.free.retain(|_, v| !v.is_empty());
    }

    /// Frees everything and drops the allocator; the device can be destroyed after this.
    pub fn shutdown(&mut self, device: &ash::Device) {
        self.trim(device, 0);
        self.allocator = None;
    }
}

/// A live buffer (a tensor's storage or a staging buffer). Dropping the last reference hands
/// the memory back to the pool; `Arc<Shared>` keeps the device alive as long as any buffer is.
pub(crate) struct Buffer {
    raw: Option<RawBuffer>,
    /// Bytes in use (the tensor's size); the buffer itself may be larger (its size class).
    pub bytes: u64,
    shared: Arc<Shared>,
}

impl Buffer {
    pub fn new(raw: RawBuffer, bytes: u64, shared: Arc<Shared>) -> Self {
        Buffer {
            raw: Some(raw),
            bytes,
            shared,
        }
    }

    pub fn handle(&self) -> vk::Buffer {
        self.raw
            .as_ref()
            .map(|r| r.buffer)
            .unwrap_or(vk::Buffer::null())
    }

    /// The host view of a staging buffer (`Place::Download`), `bytes` long.
    pub fn mapped(&self) -> Option<&[u8]> {
        let raw = self.raw.as_ref()?;
        if raw.place == Place::Device {
            return None;
        }
        raw.allocation
            .mapped_slice()
            .and_then(|s| s.get(..self.bytes as usize))
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            let mut memory = match self.shared.memory.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            memory.release(&self.shared.ctx.device, raw);
        }
    }
}

impl RawBuffer {
    /// The host view of an upload buffer, to fill before it is wrapped in a `Buffer`.
    pub fn mapped_mut(&mut self, bytes: usize) -> Option<&mut [u8]> {
        if self.place == Place::Device {
            return None;
        }
        self.allocation
            .mapped_slice_mut()
            .and_then(|s| s.get_mut(..bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_bounded_waste() {
        for bytes in [
            1u64,
            4,
            255,
            256,
            257,
            65536,
            65537,
            100_000,
            1 << 20,
            (1 << 20) + 1,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(
                c <= (bytes.max(256) * 5).div_ceil(4) + 256,
                "{bytes} -> {c}"
            );
        }
        assert_eq!(size_class(1 << 20), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), (1 << 20) + (1 << 18));
    }
}
