//! Recording and submitting work.
//!
//! Ops are recorded into the current command buffer ("frame"); a frame is submitted when it
//! holds `FLUSH_AT` commands or when the host needs a result (`to_host`, `sync`), so a training
//! step is a handful of submissions. At most `MAX_IN_FLIGHT` frames run at once; a frame keeps
//! a reference to every buffer its commands touch until its fence has signalled.
//!
//! Barriers: the tracker remembers which buffers were written and read since the last barrier.
//! A command that reads or writes a buffer written since then (read-after-write,
//! write-after-write), or writes one read since then (write-after-read), gets one pipeline
//! barrier first, carrying a buffer memory barrier for each buffer written since the last one.
//! Independent ops (the branches of a join, say) therefore run without barriers between them.
//! Pipeline barriers order against everything earlier in submission order, so the tracker
//! lives across frames; it is reset only when the queue is known idle.

use super::err;
use super::kernels::{Access, Pipeline};
use super::memory::Buffer;
use crate::error::Result;
use ash::vk;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Commands per submission (dispatches, copies, fills).
const FLUSH_AT: usize = 256;
/// Submitted frames that may run while the host records the next one.
const MAX_IN_FLIGHT: usize = 2;
/// Descriptor sets per pool (each set has at most `MAX_BINDINGS` storage buffers).
const SETS_PER_POOL: u32 = 256;
const MAX_BINDINGS: u32 = 9;

const STAGES: vk::PipelineStageFlags = vk::PipelineStageFlags::from_raw(
    vk::PipelineStageFlags::COMPUTE_SHADER.as_raw() | vk::PipelineStageFlags::TRANSFER.as_raw(),
);

struct Frame {
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
    pools: Vec<vk::DescriptorPool>,
    keep: Vec<Arc<Buffer>>,
    commands: usize,
}

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamStats {
    pub dispatches: u64,
    pub transfers: u64,
    pub barriers: u64,
    pub submissions: u64,
}

pub(crate) struct Stream {
    cmd_pool: vk::CommandPool,
    current: Option<Frame>,
    in_flight: VecDeque<Frame>,
    spare: Vec<Frame>,
    spare_pools: Vec<vk::DescriptorPool>,
    written: HashSet<vk::Buffer>,
    read: HashSet<vk::Buffer>,
    pub stats: StreamStats,
}

impl Stream {
    pub fn new(device: &ash::Device, queue_family: u32) -> Result<Self> {
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(queue_family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: a plain creation on a live device.
        let cmd_pool = unsafe { device.create_command_pool(&info, None) }
            .map_err(|e| err(format!("vkCreateCommandPool: {e}")))?;
        Ok(Stream {
            cmd_pool,
            current: None,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            spare_pools: Vec::new(),
            written: HashSet::new(),
            read: HashSet::new(),
            stats: StreamStats::default(),
        })
    }

    /// The frame being recorded, begun if needed.
    fn frame(&mut self, device: &ash::Device) -> Result<&mut Frame> {
        if self.current.is_none() {
            let frame = match self.spare.pop() {
                Some(f) => f,
                None => {
                    let alloc = vk::CommandBufferAllocateInfo::default()
                        .command_pool(self.cmd_pool)
                        .level(vk::CommandBufferLevel::PRIMARY)
                        .command_buffer_count(1);
                    // SAFETY: plain allocations on a live device.
                    let cmd = unsafe { device.allocate_command_buffers(&alloc) }
                        .map_err(|e| err(format!("vkAllocateCommandBuffers: {e}")))?[0];
                    let fence =
                        unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) }
                            .map_err(|e| err(format!("vkCreateFence: {e}")))?;
                    Frame {
                        cmd,
                        fence,
                        pools: Vec::new(),
                        keep: Vec::new(),
                        commands: 0,
                    }
                }
            };
            let begin = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            // SAFETY: the command buffer is idle (new, or its fence was waited on and reset).
            unsafe { device.begin_command_buffer(frame.cmd, &begin) }
                .map_err(|e| err(format!("vkBeginCommandBuffer: {e}")))?;
            self.current = Some(frame);
        }
        self.current
            .as_mut()
            .ok_or_else(|| err("no frame being recorded"))
    }

    /// Emits the barrier a command needs before it reads `reads` and writes `writes`.
    fn order(
        &mut self,
        device: &ash::Device,
        cmd: vk::CommandBuffer,
        reads: &[vk::Buffer],
        writes: &[vk::Buffer],
    ) {
        let hazard = reads.iter().any(|b| self.written.contains(b))
            || writes
                .iter()
                .any(|b| self.written.contains(b) || self.read.contains(b));
        if hazard {
            let barriers: Vec<vk::BufferMemoryBarrier<'_>> = self
                .written
                .iter()
                .map(|&b| {
                    vk::BufferMemoryBarrier::default()
                        .src_access_mask(
                            vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE,
                        )
                        .dst_access_mask(
                            vk::AccessFlags::SHADER_READ
                                | vk::AccessFlags::SHADER_WRITE
                                | vk::AccessFlags::TRANSFER_READ
                                | vk::AccessFlags::TRANSFER_WRITE,
                        )
                        .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                        .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                        .buffer(b)
                        .offset(0)
                        .size(vk::WHOLE_SIZE)
                })
                .collect();
            // SAFETY: `cmd` is in the recording state; the barriers name live buffers (every
            // buffer in the tracker is kept alive by a frame or was waited on).
            unsafe {
                device.cmd_pipeline_barrier(
                    cmd,
                    STAGES,
                    STAGES,
                    vk::DependencyFlags::empty(),
                    &[],
                    &barriers,
                    &[],
                )
            };
            self.stats.barriers += 1;
            self.written.clear();
            self.read.clear();
        }
        self.read.extend(reads.iter().copied());
        self.written.extend(writes.iter().copied());
    }

    fn descriptor_set(
        &mut self,
        device: &ash::Device,
        layout: vk::DescriptorSetLayout,
    ) -> Result<vk::DescriptorSet> {
        let layouts = [layout];
        for attempt in 0..2 {
            let pool = {
                let frame = self.frame(device)?;
                frame.pools.last().copied()
            };
            if let Some(pool) = pool {
                let info = vk::DescriptorSetAllocateInfo::default()
                    .descriptor_pool(pool)
                    .set_layouts(&layouts);
                // SAFETY: the pool belongs to this frame and is not in use by the device.
                match unsafe { device.allocate_descriptor_sets(&info) } {
                    Ok(sets) => return Ok(sets[0]),
                    Err(vk::Result::ERROR_OUT_OF_POOL_MEMORY)
                    | Err(vk::Result::ERROR_FRAGMENTED_POOL)
                        if attempt == 0 => {}
                    Err(e) => return Err(err(format!("vkAllocateDescriptorSets: {e}"))),
                }
            }
            let pool = match self.spare_pools.pop() {
                Some(p) => p,
                None => {
                    let sizes = [vk::DescriptorPoolSize::default()
                        .ty(vk::DescriptorType::STORAGE_BUFFER)
                        .descriptor_count(SETS_PER_POOL * MAX_BINDINGS)];
                    let info = vk::DescriptorPoolCreateInfo::default()
                        .max_sets(SETS_PER_POOL)
                        .pool_sizes(&sizes);
                    // SAFETY: a plain creation on a live device.
                    unsafe { device.create_descriptor_pool(&info, None) }
                        .map_err(|e| err(format!("vkCreateDescriptorPool: {e}")))?
                }
            };
            self.frame(device)?.pools.push(pool);
        }
        Err(err("could not allocate a descriptor set from a fresh pool"))
    }

    /// Records one compute dispatch; `buffers[i]` is bound at binding i.
    pub fn dispatch(
        &mut self,
        device: &ash::Device,
        queue: vk::Queue,
        pipeline: &Pipeline,
        buffers: &[&Arc<Buffer>],
        push: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        if buffers.len() != pipeline.bindings.len() || push.len() != pipeline.push_words as usize {
            return Err(err(format!(
                "kernel called with {} buffers and {} push words, expects {} and {}",
                buffers.len(),
                push.len(),
                pipeline.bindings.len(),
                pipeline.push_words
            )));
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let set = self.descriptor_set(device, pipeline.set_layout)?;
        let infos: Vec<[vk::DescriptorBufferInfo; 1]> = buffers
            .iter()
            .map(|b| {
                [vk::DescriptorBufferInfo::default()
                    .buffer(b.handle())
                    .offset(0)
                    .range(b.bytes.max(4))]
            })
            .collect();
        let writes: Vec<vk::WriteDescriptorSet<'_>> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(i as u32)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(info)
            })
            .collect();
        let reads: Vec<vk::Buffer> = buffers
            .iter()
            .zip(pipeline.bindings)
            .filter(|(_, a)| **a == Access::Read)
            .map(|(b, _)| b.handle())
            .collect();
        let written: Vec<vk::Buffer> = buffers
            .iter()
            .zip(pipeline.bindings)
            .filter(|(_, a)| **a == Access::Write)
            .map(|(b, _)| b.handle())
            .collect();
        let cmd = self.frame(device)?.cmd;
        self.order(device, cmd, &reads, &written);
        let words: Vec<u8> = push.iter().flat_map(|w| w.to_ne_bytes()).collect();
        // SAFETY: the set is fresh and not in use; `cmd` is recording; the pipeline, its layout
        // and the buffers are alive (the frame keeps the buffers).
        unsafe {
            device.update_descriptor_sets(&writes, &[]);
            device.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, pipeline.pipeline);
            device.cmd_bind_descriptor_sets(
                cmd,
                vk::PipelineBindPoint::COMPUTE,
                pipeline.layout,
                0,
                &[set],
                &[],
            );
            device.cmd_push_constants(
                cmd,
                pipeline.layout,
                vk::ShaderStageFlags::COMPUTE,
                0,
                &words,
            );
            device.cmd_dispatch(cmd, groups[0], groups[1], groups[2]);
        }
        self.stats.dispatches += 1;
        self.note(device, queue, buffers)
    }

    /// Keeps the buffers alive with the frame and submits it when it is full.
    fn note(
        &mut self,
        device: &ash::Device,
        queue: vk::Queue,
        buffers: &[&Arc<Buffer>],
    ) -> Result<()> {
        let frame = self.frame(device)?;
        frame.keep.extend(buffers.iter().map(|b| Arc::clone(b)));
        frame.commands += 1;
        if frame.commands >= FLUSH_AT {
            self.flush(device, queue)?;
        }
        Ok(())
    }

    /// Records dst = 0.
    pub fn fill_zero(
        &mut self,
        device: &ash::Device,
        queue: vk::Queue,
        dst: &Arc<Buffer>,
    ) -> Result<()> {
        let cmd = self.frame(device)?.cmd;
        self.order(device, cmd, &[], &[dst.handle()]);
        // SAFETY: `cmd` is recording, dst is alive and has TRANSFER_DST usage.
        unsafe { device.cmd_fill_buffer(cmd, dst.handle(), 0, vk::WHOLE_SIZE, 0) };
        self.stats.transfers += 1;
        self.note(device, queue, &[dst])
    }

    /// Records dst[..bytes] = src[..bytes].
    pub fn copy(
        &mut self,
        device: &ash::Device,
        queue: vk::Queue,
        src: &Arc<Buffer>,
        dst: &Arc<Buffer>,
        bytes: u64,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let cmd = self.frame(device)?.cmd;
        self.order(device, cmd, &[src.handle()], &[dst.handle()]);
        let region = [vk::BufferCopy::default().size(bytes)];
        // SAFETY: both buffers are alive, large enough and have the transfer usages.
        unsafe { device.cmd_copy_buffer(cmd, src.handle(), dst.handle(), &region) };
        self.stats.transfers += 1;
        self.note(device, queue, &[src, dst])
    }

    /// Records a copy into a host-readable buffer and the barrier that makes it visible to
    /// the host once the frame's fence has signalled.
    pub fn download(
        &mut self,
        device: &ash::Device,
        queue: vk::Queue,
        src: &Arc<Buffer>,
        staging: &Arc<Buffer>,
        bytes: u64,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.copy(device, queue, src, staging, bytes)?;
        let cmd = self.frame(device)?.cmd;
        let barrier = [vk::BufferMemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ)
            .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .buffer(staging.handle())
            .offset(0)
            .size(vk::WHOLE_SIZE)];
        // SAFETY: `cmd` is recording and the staging buffer is alive.
        unsafe {
            device.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[],
                &barrier,
                &[],
            )
        };
        Ok(())
    }

    /// Submits the frame being recorded, if any.
    pub fn flush(&mut self, device: &ash::Device, queue: vk::Queue) -> Result<()> {
        let Some(frame) = self.current.take() else {
            return Ok(());
        };
        let cmds = [frame.cmd];
        let submit = [vk::SubmitInfo::default().command_buffers(&cmds)];
        // SAFETY: the command buffer was fully recorded; the queue is used only under the
        // lock that guards this stream; the fence is unsignalled.
        let result = unsafe {
            device
                .end_command_buffer(frame.cmd)
                .and_then(|_| device.queue_submit(queue, &submit, frame.fence))
        };
        if let Err(e) = result {
            // The frame never ran: recycle it without waiting.
            self.recycle(device, frame, false);
            return Err(err(format!("vkQueueSubmit: {e}")));
        }
        self.stats.submissions += 1;
        self.in_flight.push_back(frame);
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.retire_oldest(device)?;
        }
        Ok(())
    }

    fn retire_oldest(&mut self, device: &ash::Device) -> Result<()> {
        let Some(frame) = self.in_flight.pop_front() else {
            return Ok(());
        };
        // SAFETY: the fence belongs to a submitted frame.
        let waited = unsafe { device.wait_for_fences(&[frame.fence], true, u64::MAX) };
        self.recycle(device, frame, true);
        waited.map_err(|e| err(format!("vkWaitForFences: {e}")))
    }

    fn recycle(&mut self, device: &ash::Device, mut frame: Frame, submitted: bool) {
        // SAFETY: the frame's work is complete (its fence was waited on) or was never
        // submitted, so its command buffer, fence and descriptor pools are idle.
        unsafe {
            if submitted {
                let _ = device.reset_fences(&[frame.fence]);
            }
            let _ = device.reset_command_buffer(frame.cmd, vk::CommandBufferResetFlags::empty());
            for p in frame.pools.drain(..) {
                let _ = device.reset_descriptor_pool(p, vk::DescriptorPoolResetFlags::empty());
                self.spare_pools.push(p);
            }
        }
        frame.keep.clear();
        frame.commands = 0;
        self.spare.push(frame);
    }

    /// Submits everything and waits until the queue has finished it.
    pub fn finish(&mut self, device: &ash::Device, queue: vk::Queue) -> Result<()> {
        let flushed = self.flush(device, queue);
        let mut waited = Ok(());
        while !self.in_flight.is_empty() {
            if let Err(e) = self.retire_oldest(device) {
                waited = Err(e);
            }
        }
        self.written.clear();
        self.read.clear();
        flushed.and(waited)
    }

    /// Drops every frame's buffer references without waiting; the caller has made the device
    /// idle (after a failed `finish`, say).
    pub fn release_all(&mut self, device: &ash::Device) {
        if let Some(f) = self.current.take() {
            self.recycle(device, f, false);
        }
        while let Some(f) = self.in_flight.pop_front() {
            self.recycle(device, f, true);
        }
        self.written.clear();
        self.read.clear();
    }

    /// Destroys the stream's objects; the caller has made the device idle.
    pub fn destroy(&mut self, device: &ash::Device) {
        self.release_all(device);
        // SAFETY: the device is idle; nothing below is in use.
        unsafe {
            for f in self.spare.drain(..) {
                device.destroy_fence(f.fence, None);
            }
            for p in self.spare_pools.drain(..) {
                device.destroy_descriptor_pool(p, None);
            }
            device.destroy_command_pool(self.cmd_pool, None);
        }
        self.cmd_pool = vk::CommandPool::null();
    }
}
