//! The Vulkan compute backend: the same op set as the CPU backend, as GLSL compute kernels
//! (`spirv/src/*.comp`, committed as SPIR-V so the crate builds without a shader toolchain).
//!
//! - `context`: instance, device choice, queue, validation messages; `list_devices`.
//! - `memory`: buffers from gpu-allocator through a size-class pool; staging for transfers.
//! - `kernels`: the pipelines, one per kernel, created on first use.
//! - `stream`: command recording, hazard-tracked barriers, batched submission.
//!
//! Semantics are the CPU backend's (`crate::ops::<op>`): every op here checks shapes with the
//! same rules, and `tests/vulkan_conformance.rs` compares each op with the CPU. Reductions
//! (BatchNorm statistics, weight gradients, losses) use fixed-order trees or fixed split-K,
//! never float atomics, so a run is reproducible. Dropout masks are the CPU's bit for bit.
//!
//! Storage is reference counted: a `Tensor<Vulkan>` clone shares the device buffer. The ops
//! that update a tensor in place (`add_assign`, `sgd_update`, `batchnorm_update_running`)
//! copy on write when the buffer is shared, so a clone never changes behind its owner's back,
//! exactly as with the CPU's `Vec` storage.

mod context;
mod kernels;
mod memory;
mod stream;

pub use context::{DeviceInfo, ValidationLog, ValidationReport, list_devices};
pub use stream::StreamStats;

use super::Backend;
use crate::error::{Error, Result};
use crate::ops::batchnorm::{self, BatchStats};
use crate::ops::conv2d::{Conv2dParams, ConvGeom};
use crate::ops::pool::Pool2dParams;
use crate::ops::{dropout, join, linear, softmax_xent};
use crate::tensor::{Shape, Tensor, same_shape};
use context::Context;
use kernels::{Kernel, Kernels};
use memory::{Buffer, Memory, Place};
use std::sync::{Arc, Mutex, MutexGuard};
use stream::Stream;

/// Tensors this small keep a host copy of what `from_host` uploaded (labels, for the host-side
/// label check of `softmax_xent`, without a device round trip).
const HOST_SHADOW_MAX: usize = 1 << 16;
/// Invocations per workgroup of the element-wise kernels (`WG_SIZE` in common.glsl).
const WG: usize = 256;
/// Output tile of the GEMM kernels (`BM`, `BN` in gemm_tile.glsl) and its k step (`BK`).
const TILE: usize = 64;
const TILE_K: usize = 16;

pub(crate) fn err(what: impl Into<String>) -> Error {
    Error::Backend {
        backend: "vulkan".into(),
        what: what.into(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

struct Work {
    stream: Stream,
    kernels: Kernels,
}

/// Everything that lives as long as the device: the last `Vulkan` handle or tensor to go
/// destroys it, in dependency order (see `Drop`).
pub(crate) struct Shared {
    work: Mutex<Work>,
    memory: Mutex<Memory>,
    ctx: Context,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let device = &self.ctx.device;
        // SAFETY: no other reference to the device exists any more (this is the last owner).
        unsafe {
            let _ = device.device_wait_idle();
        }
        let work = match self.work.get_mut() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        work.stream.destroy(device);
        work.kernels.destroy(device);
        let memory = match self.memory.get_mut() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        memory.shutdown(device);
        // `ctx` drops next: device, messenger, instance.
    }
}

/// Storage of a `Tensor<Vulkan>`: a shared handle to a device buffer.
#[derive(Clone)]
pub struct VkStorage(Arc<Handle>);

struct Handle {
    buf: Arc<Buffer>,
    /// The uploaded values of a small `from_host` tensor, until it is modified.
    host: Option<Box<[f32]>>,
}

impl VkStorage {
    fn new(buf: Arc<Buffer>) -> Self {
        VkStorage(Arc::new(Handle { buf, host: None }))
    }
}

/// How to open a device.
#[derive(Clone, Debug, Default)]
pub struct VulkanOptions {
    /// Device index from `list_devices`; `None` picks discrete, integrated, virtual, CPU.
    pub device: Option<usize>,
    /// Turn on VK_LAYER_KHRONOS_validation with synchronization validation and record its
    /// messages (see `Vulkan::validation_log`).
    pub validation: bool,
}

/// The Vulkan backend. Use it as any `B: Backend`.
pub struct Vulkan {
    shared: Arc<Shared>,
}

fn buf(t: &Tensor<Vulkan>) -> &Arc<Buffer> {
    &t.storage.0.buf
}

fn words(values: &[usize]) -> Result<Vec<u32>> {
    values
        .iter()
        .map(|&v| u32::try_from(v).map_err(|_| err(format!("size {v} does not fit in 32 bits"))))
        .collect()
}

impl Vulkan {
    /// Opens device `index` (or the preferred one). Validation is on when the environment
    /// has FRACTALNET_VK_VALIDATION=1.
    pub fn new(index: Option<usize>) -> Result<Vulkan> {
        let validation = std::env::var("FRACTALNET_VK_VALIDATION").is_ok_and(|v| v == "1");
        Vulkan::with_options(VulkanOptions {
            device: index,
            validation,
        })
    }

    pub fn with_options(o: VulkanOptions) -> Result<Vulkan> {
        let ctx = Context::new(o.device, o.validation)?;
        let allocator =
            gpu_allocator::vulkan::Allocator::new(&gpu_allocator::vulkan::AllocatorCreateDesc {
                instance: ctx.instance().clone(),
                device: ctx.device.clone(),
                physical_device: ctx.physical,
                debug_settings: Default::default(),
                buffer_device_address: false,
                allocation_sizes: Default::default(),
            });
        // Objects made so far are destroyed by `ctx`'s Drop on the error paths.
        let allocator = allocator.map_err(|e| err(format!("gpu-allocator: {e}")))?;
        let memory = Memory::new(allocator, ctx.info.memory_bytes);
        let kernels = Kernels::new(&ctx.device);
        let stream = Stream::new(&ctx.device, ctx.queue_family);
        let (kernels, stream) = match (kernels, stream) {
            (Ok(k), Ok(s)) => (k, s),
            (k, s) => {
                let mut memory = memory;
                memory.shutdown(&ctx.device);
                if let Ok(mut k) = k {
                    k.destroy(&ctx.device);
                }
                if let Ok(mut s) = s {
                    s.destroy(&ctx.device);
                }
                return Err(err("could not create the pipeline cache or command pool"));
            }
        };
        Ok(Vulkan {
            shared: Arc::new(Shared {
                work: Mutex::new(Work { stream, kernels }),
                memory: Mutex::new(memory),
                ctx,
            }),
        })
    }

    pub fn device(&self) -> &DeviceInfo {
        &self.shared.ctx.info
    }

    /// The validation layer's messages (`None` when validation is off). The log stays
    /// readable after the backend and its tensors are gone, so that it also holds what the
    /// layer reports when the device is destroyed (leaked objects).
    pub fn validation_log(&self) -> Option<ValidationLog> {
        self.shared.ctx.validation_log()
    }

    /// Commands, barriers and submissions recorded so far.
    pub fn stats(&self) -> StreamStats {
        lock(&self.shared.work).stream.stats
    }

    fn alloc(&self, place: Place, numel: usize) -> Result<Arc<Buffer>> {
        let bytes = (numel as u64) * 4;
        let max = self.shared.ctx.limits.max_storage_buffer_range;
        if place == Place::Device && bytes > max {
            return Err(err(format!(
                "a tensor of {numel} floats exceeds the device's storage buffer limit of {max} bytes"
            )));
        }
        let raw = lock(&self.shared.memory).acquire(&self.shared.ctx.device, place, bytes)?;
        Ok(Arc::new(Buffer::new(raw, bytes, Arc::clone(&self.shared))))
    }

    /// A tensor whose contents the next kernel will write in full.
    fn empty(&self, shape: Shape) -> Result<Tensor<Self>> {
        let b = self.alloc(Place::Device, shape.numel())?;
        Ok(Tensor {
            shape,
            storage: VkStorage::new(b),
        })
    }

    /// The buffer to read from and the buffer to write to for an in-place update of `t`:
    /// the same one when `t` owns its storage alone, else a fresh one that `t` then takes.
    fn writable(&self, t: &mut Tensor<Self>) -> Result<(Arc<Buffer>, Arc<Buffer>)> {
        if let Some(h) = Arc::get_mut(&mut t.storage.0) {
            h.host = None;
            return Ok((Arc::clone(&h.buf), Arc::clone(&h.buf)));
        }
        let old = Arc::clone(buf(t));
        let new = self.alloc(Place::Device, t.numel())?;
        t.storage = VkStorage::new(Arc::clone(&new));
        Ok((old, new))
    }

    fn run(
        &self,
        k: Kernel,
        buffers: &[&Arc<Buffer>],
        push: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        let limits = self.shared.ctx.limits.max_workgroup_count;
        if groups.iter().zip(limits).any(|(g, l)| *g > l) {
            return Err(err(format!(
                "{k:?}: {groups:?} workgroups exceed the device limit {limits:?}"
            )));
        }
        let ctx = &self.shared.ctx;
        let mut work = lock(&self.shared.work);
        let Work { stream, kernels } = &mut *work;
        let pipeline = kernels.get(&ctx.device, k)?;
        stream.dispatch(&ctx.device, ctx.queue, pipeline, buffers, push, groups)
    }

    /// Workgroups for one invocation per item: a 2-D grid, x capped at 65535.
    fn grid(&self, items: usize) -> Result<[u32; 3]> {
        let groups = items.div_ceil(WG);
        let x = groups.min(65535);
        let y = if x == 0 { 0 } else { groups.div_ceil(x) };
        Ok([
            x as u32,
            u32::try_from(y).map_err(|_| err("too many workgroups"))?,
            1,
        ])
    }

    fn ew(
        &self,
        k: Kernel,
        a: &Arc<Buffer>,
        b: &Arc<Buffer>,
        y: &Arc<Buffer>,
        n: usize,
        s: f32,
    ) -> Result<()> {
        let push = [words(&[n])?[0], s.to_bits()];
        self.run(k, &[a, b, y], &push, self.grid(n)?)
    }

    fn unary(&self, k: Kernel, a: &Tensor<Self>, b: &Tensor<Self>, s: f32) -> Result<Tensor<Self>> {
        let y = self.empty(a.shape.clone())?;
        self.ew(k, buf(a), buf(b), buf(&y), a.numel(), s)?;
        Ok(y)
    }

    /// C[M, N] (= slices z of C for split-K) from strided A and B; see gemm.comp.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        a: &Arc<Buffer>,
        b: &Arc<Buffer>,
        c: &Arc<Buffer>,
        bias: Option<&Arc<Buffer>>,
        [m, n, k]: [usize; 3],
        [a_rs, a_cs, b_rs, b_cs]: [usize; 4],
    ) -> Result<()> {
        let push = words(&[m, n, k, a_rs, a_cs, b_rs, b_cs, k, bias.is_some() as usize])?;
        let groups = words(&[n.div_ceil(TILE), m.div_ceil(TILE), 1])?;
        self.run(
            Kernel::Gemm,
            &[a, b, c, bias.unwrap_or(a)],
            &push,
            [groups[0], groups[1], 1],
        )
    }

    /// Sums the `rows` rows of x [rows, cols] in order into y [cols], then divides by
    /// `divisor` unless it is 0.
    fn reduce_rows(
        &self,
        x: &Arc<Buffer>,
        y: &Arc<Buffer>,
        rows: usize,
        cols: usize,
        divisor: f32,
    ) -> Result<()> {
        let w = words(&[rows, cols])?;
        self.run(
            Kernel::ReduceRows,
            &[x, y],
            &[w[0], w[1], divisor.to_bits()],
            self.grid(cols)?,
        )
    }

    fn finish(&self) -> Result<()> {
        let ctx = &self.shared.ctx;
        lock(&self.shared.work)
            .stream
            .finish(&ctx.device, ctx.queue)
    }
}

impl Drop for Vulkan {
    fn drop(&mut self) {
        // Pending frames hold buffers, and buffers hold the device: finish the work so that
        // the device goes as soon as the last tensor does.
        let ctx = &self.shared.ctx;
        let mut work = lock(&self.shared.work);
        if work.stream.finish(&ctx.device, ctx.queue).is_err() {
            // SAFETY: waiting for idle is always allowed; afterwards nothing is in flight.
            unsafe {
                let _ = ctx.device.device_wait_idle();
            }
            work.stream.release_all(&ctx.device);
        }
    }
}

/// Workgroups for a GEMM with `cols` columns and `rows` rows whose column tiles spread over
/// x and z (`column_tile_xz` in gemm_tile.glsl).
fn tiles_xz(cols: usize, rows: usize) -> Result<[u32; 3]> {
    let col_tiles = cols.div_ceil(TILE);
    let x = col_tiles.min(65535);
    let z = if x == 0 { 0 } else { col_tiles.div_ceil(x) };
    let w = words(&[x, rows.div_ceil(TILE), z])?;
    Ok([w[0], w[1], w[2]])
}

fn conv_push(g: &ConvGeom, k_chunk: usize) -> Result<Vec<u32>> {
    words(&[
        g.n, g.cin, g.h, g.w, g.cout, g.kh, g.kw, g.ho, g.wo, g.stride, g.pad, k_chunk,
    ])
}

impl Backend for Vulkan {
    type Storage = VkStorage;

    fn name(&self) -> String {
        let i = self.device();
        format!("vulkan:{} {}", i.index, i.name)
    }

    fn zeros(&self, shape: &Shape) -> Result<Tensor<Self>> {
        let t = self.empty(shape.clone())?;
        let ctx = &self.shared.ctx;
        lock(&self.shared.work)
            .stream
            .fill_zero(&ctx.device, ctx.queue, buf(&t))?;
        Ok(t)
    }

    fn from_host(&self, shape: Shape, data: &[f32]) -> Result<Tensor<Self>> {
        if shape.numel() != data.len() {
            return Err(Error::shape(
                "from_host",
                format!("shape {shape} but {} values", data.len()),
            ));
        }
        let t = self.empty(shape)?;
        if !data.is_empty() {
            let bytes = data.len() * 4;
            let mut raw = lock(&self.shared.memory).acquire(
                &self.shared.ctx.device,
                Place::Upload,
                bytes as u64,
            )?;
            let Some(dst) = raw.mapped_mut(bytes) else {
                lock(&self.shared.memory).release(&self.shared.ctx.device, raw);
                return Err(err("upload buffer is not host-visible"));
            };
            for (d, v) in dst.chunks_exact_mut(4).zip(data) {
                d.copy_from_slice(&v.to_ne_bytes());
            }
            let staging = Arc::new(Buffer::new(raw, bytes as u64, Arc::clone(&self.shared)));
            let ctx = &self.shared.ctx;
            lock(&self.shared.work).stream.copy(
                &ctx.device,
                ctx.queue,
                &staging,
                buf(&t),
                bytes as u64,
            )?;
        }
        let mut t = t;
        if data.len() <= HOST_SHADOW_MAX
            && let Some(h) = Arc::get_mut(&mut t.storage.0)
        {
            h.host = Some(data.into());
        }
        Ok(t)
    }

    fn to_host(&self, t: &Tensor<Self>) -> Result<Vec<f32>> {
        let n = t.numel();
        if n == 0 {
            return Ok(Vec::new());
        }
        let staging = self.alloc(Place::Download, n)?;
        let ctx = &self.shared.ctx;
        {
            let mut work = lock(&self.shared.work);
            work.stream
                .download(&ctx.device, ctx.queue, buf(t), &staging, (n * 4) as u64)?;
            work.stream.finish(&ctx.device, ctx.queue)?;
        }
        let bytes = staging
            .mapped()
            .ok_or_else(|| err("download buffer is not host-visible"))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn to_host_many(&self, ts: &[&Tensor<Self>]) -> Result<Vec<Vec<f32>>> {
        // staging buffers first (allocation may need the device), then record every copy
        let staged: Vec<Option<Arc<Buffer>>> = ts
            .iter()
            .map(|t| {
                if t.numel() == 0 {
                    Ok(None)
                } else {
                    self.alloc(Place::Download, t.numel()).map(Some)
                }
            })
            .collect::<Result<_>>()?;
        let ctx = &self.shared.ctx;
        {
            let mut work = lock(&self.shared.work);
            for (t, staging) in ts.iter().zip(&staged) {
                if let Some(staging) = staging {
                    work.stream.download(
                        &ctx.device,
                        ctx.queue,
                        buf(t),
                        staging,
                        (t.numel() * 4) as u64,
                    )?;
                }
            }
            // one wait for every download
            work.stream.finish(&ctx.device, ctx.queue)?;
        }
        staged
            .into_iter()
            .map(|s| match s {
                None => Ok(Vec::new()),
                Some(staging) => {
                    let bytes = staging
                        .mapped()
                        .ok_or_else(|| err("download buffer is not host-visible"))?;
                    Ok(bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                        .collect())
                }
            })
            .collect()
    }

    fn sync(&self) -> Result<()> {
        self.finish()
    }

    fn add_assign(&self, acc: &mut Tensor<Self>, x: &Tensor<Self>) -> Result<()> {
        same_shape("add_assign", &acc.shape, &x.shape)?;
        let (src, dst) = self.writable(acc)?;
        self.ew(Kernel::Add, &src, buf(x), &dst, x.numel(), 0.0)
    }

    fn scale(&self, x: &Tensor<Self>, s: f32) -> Result<Tensor<Self>> {
        self.unary(Kernel::Scale, x, x, s)
    }

    fn mul(&self, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<Tensor<Self>> {
        same_shape("mul", &a.shape, &b.shape)?;
        self.unary(Kernel::Mul, a, b, 0.0)
    }

    fn relu_forward(&self, x: &Tensor<Self>) -> Result<Tensor<Self>> {
        self.unary(Kernel::Relu, x, x, 0.0)
    }

    fn relu_backward(&self, y: &Tensor<Self>, dy: &Tensor<Self>) -> Result<Tensor<Self>> {
        same_shape("relu_backward", &y.shape, &dy.shape)?;
        self.unary(Kernel::ReluBackward, y, dy, 0.0)
    }

    fn conv2d_forward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        p: Conv2dParams,
    ) -> Result<Tensor<Self>> {
        let g = ConvGeom::new(&x.shape, &w.shape, p)?;
        let y = self.empty(g.out_shape())?;
        self.run(
            Kernel::Conv2dForward,
            &[buf(x), buf(w), buf(&y)],
            &conv_push(&g, 0)?,
            tiles_xz(g.n * g.ho * g.wo, g.cout)?,
        )?;
        Ok(y)
    }

    fn conv2d_backward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        dy: &Tensor<Self>,
        p: Conv2dParams,
        need_dx: bool,
    ) -> Result<(Option<Tensor<Self>>, Tensor<Self>)> {
        let g = ConvGeom::new(&x.shape, &w.shape, p)?;
        same_shape("conv2d_backward", &g.out_shape(), &dy.shape)?;
        let dx = if need_dx {
            let dx = self.empty(x.shape.clone())?;
            self.run(
                Kernel::Conv2dDx,
                &[buf(dy), buf(w), buf(&dx)],
                &conv_push(&g, 0)?,
                tiles_xz(g.n * g.h * g.w, g.cin)?,
            )?;
            Some(dx)
        } else {
            None
        };
        // The weight gradient reduces over the whole batch (N * Ho * Wo terms) into a small
        // output; split the reduction so the device has enough workgroups. The split depends
        // only on the shape, so the summation order (and the result) is the same every run.
        let total = g.n * g.ho * g.wo;
        if total == 0 {
            return Ok((dx, self.zeros(&w.shape)?));
        }
        let tiles = g.cout.div_ceil(TILE) * g.k().div_ceil(TILE);
        let want = (512 / tiles).max(1);
        let chunk = total.div_ceil(want).next_multiple_of(TILE_K).max(256);
        let splits = total.div_ceil(chunk);
        let dw = self.empty(w.shape.clone())?;
        let part = if splits == 1 {
            Arc::clone(buf(&dw))
        } else {
            self.alloc(Place::Device, splits * g.cout * g.k())?
        };
        let groups = words(&[g.k().div_ceil(TILE), g.cout.div_ceil(TILE), splits])?;
        self.run(
            Kernel::Conv2dDw,
            &[buf(x), buf(dy), &part],
            &conv_push(&g, chunk)?,
            [groups[0], groups[1], groups[2]],
        )?;
        if splits > 1 {
            self.reduce_rows(&part, buf(&dw), splits, g.cout * g.k(), 0.0)?;
        }
        Ok((dx, dw))
    }

    fn batchnorm_forward_train(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        beta: &Tensor<Self>,
        eps: f32,
        relu: bool,
    ) -> Result<(Tensor<Self>, BatchStats<Self>)> {
        let [n, c, hw] = batchnorm::check(&x.shape, &[&gamma.shape, &beta.shape])?;
        let mean = self.empty(Shape::new([c]))?;
        let var = self.empty(Shape::new([c]))?;
        let w = words(&[n, c, hw])?;
        self.run(
            Kernel::BatchnormStats,
            &[buf(x), buf(&mean), buf(&var)],
            &w,
            [w[1], 1, 1],
        )?;
        let y = self.batchnorm_forward_eval(x, gamma, beta, &mean, &var, eps, relu)?;
        Ok((y, BatchStats { mean, var }))
    }

    fn batchnorm_forward_eval(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        beta: &Tensor<Self>,
        mean: &Tensor<Self>,
        var: &Tensor<Self>,
        eps: f32,
        relu: bool,
    ) -> Result<Tensor<Self>> {
        let [_, c, hw] = batchnorm::check(
            &x.shape,
            &[&gamma.shape, &beta.shape, &mean.shape, &var.shape],
        )?;
        let y = self.empty(x.shape.clone())?;
        let w = words(&[x.numel(), c, hw])?;
        let k = if relu {
            Kernel::BatchnormApplyRelu
        } else {
            Kernel::BatchnormApply
        };
        self.run(
            k,
            &[buf(x), buf(gamma), buf(beta), buf(mean), buf(var), buf(&y)],
            &[w[0], w[1], w[2], eps.to_bits()],
            self.grid(x.numel())?,
        )?;
        Ok(y)
    }

    fn batchnorm_backward(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        stats: &BatchStats<Self>,
        y: &Tensor<Self>,
        dy: &Tensor<Self>,
        eps: f32,
        relu: bool,
    ) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)> {
        let [n, c, hw] = batchnorm::check(
            &x.shape,
            &[&gamma.shape, &stats.mean.shape, &stats.var.shape],
        )?;
        same_shape("batchnorm_backward", &x.shape, &dy.shape)?;
        same_shape("batchnorm_backward", &x.shape, &y.shape)?;
        let dgamma = self.empty(Shape::new([c]))?;
        let dbeta = self.empty(Shape::new([c]))?;
        let w = words(&[n, c, hw])?;
        let (reduce, apply) = if relu {
            (
                Kernel::BatchnormBackwardReduceRelu,
                Kernel::BatchnormBackwardDxRelu,
            )
        } else {
            (Kernel::BatchnormBackwardReduce, Kernel::BatchnormBackwardDx)
        };
        let (mean, var) = (buf(&stats.mean), buf(&stats.var));
        self.run(
            reduce,
            &[
                buf(x),
                buf(y),
                buf(dy),
                mean,
                var,
                buf(&dgamma),
                buf(&dbeta),
            ],
            &[w[0], w[1], w[2], eps.to_bits()],
            [w[1], 1, 1],
        )?;
        let dx = self.empty(x.shape.clone())?;
        let numel = words(&[x.numel()])?[0];
        self.run(
            apply,
            &[
                buf(x),
                buf(y),
                buf(dy),
                mean,
                var,
                buf(gamma),
                buf(&dgamma),
                buf(&dbeta),
                buf(&dx),
            ],
            &[
                numel,
                w[1],
                w[2],
                eps.to_bits(),
                ((n * hw) as f32).to_bits(),
            ],
            self.grid(x.numel())?,
        )?;
        Ok((dx, dgamma, dbeta))
    }

    fn batchnorm_update_running(
        &self,
        running_mean: &mut Tensor<Self>,
        running_var: &mut Tensor<Self>,
        stats: &BatchStats<Self>,
        momentum: f32,
        n: usize,
    ) -> Result<()> {
        same_shape(
            "batchnorm_update_running",
            &running_mean.shape,
            &stats.mean.shape,
        )?;
        same_shape(
            "batchnorm_update_running",
            &running_var.shape,
            &stats.var.shape,
        )?;
        let unbias = if n > 1 {
            n as f32 / (n - 1) as f32
        } else {
            1.0
        };
        let c = running_mean.numel();
        let (rm_in, rm_out) = self.writable(running_mean)?;
        let (rv_in, rv_out) = self.writable(running_var)?;
        self.run(
            Kernel::BatchnormRunning,
            &[
                &rm_in,
                &rv_in,
                buf(&stats.mean),
                buf(&stats.var),
                &rm_out,
                &rv_out,
            ],
            &[words(&[c])?[0], momentum.to_bits(), unbias.to_bits()],
            self.grid(c)?,
        )
    }

    fn dropout_forward(
        &self,
        x: &Tensor<Self>,
        rate: f32,
        seed: u64,
    ) -> Result<(Tensor<Self>, Tensor<Self>)> {
        dropout::check_rate(rate)?;
        let n = x.numel();
        let keep = 1.0 / (1.0 - rate);
        let y = self.empty(x.shape.clone())?;
        let mask = self.empty(x.shape.clone())?;
        self.run(
            Kernel::Dropout,
            &[buf(x), buf(&y), buf(&mask)],
            &[
                words(&[n])?[0],
                seed as u32,
                (seed >> 32) as u32,
                rate.to_bits(),
                keep.to_bits(),
            ],
            self.grid(n.div_ceil(4))?,
        )?;
        Ok((y, mask))
    }

    fn maxpool2d_forward(&self, x: &Tensor<Self>, p: Pool2dParams) -> Result<Tensor<Self>> {
        let out = p.out_shape(&x.shape)?;
        let [n, c, h, w] = x.shape.nchw("maxpool2d")?;
        let push = words(&[
            n * c,
            h,
            w,
            out.dim(2),
            out.dim(3),
            p.kernel,
            p.stride,
            p.pad,
        ])?;
        let y = self.empty(out)?;
        self.run(
            Kernel::MaxpoolForward,
            &[buf(x), buf(&y)],
            &push,
            self.grid(y.numel())?,
        )?;
        Ok(y)
    }

    fn maxpool2d_backward(
        &self,
        x: &Tensor<Self>,
        dy: &Tensor<Self>,
        p: Pool2dParams,
    ) -> Result<Tensor<Self>> {
        let out = p.out_shape(&x.shape)?;
        same_shape("maxpool2d_backward", &out, &dy.shape)?;
        let [n, c, h, w] = x.shape.nchw("maxpool2d")?;
        let push = words(&[
            n * c,
            h,
            w,
            out.dim(2),
            out.dim(3),
            p.kernel,
            p.stride,
            p.pad,
        ])?;
        let dx = self.empty(x.shape.clone())?;
        self.run(
            Kernel::MaxpoolBackward,
            &[buf(x), buf(dy), buf(&dx)],
            &push,
            self.grid(x.numel())?,
        )?;
        Ok(dx)
    }

    fn global_avgpool_forward(&self, x: &Tensor<Self>) -> Result<Tensor<Self>> {
        let [n, c, h, w] = x.shape.nchw("global_avgpool")?;
        if h * w == 0 {
            return Err(Error::shape(
                "global_avgpool",
                format!("empty input {}", x.shape),
            ));
        }
        let y = self.empty(Shape::new([n, c, 1, 1]))?;
        let push = words(&[n * c, h * w])?;
        self.run(
            Kernel::AvgpoolForward,
            &[buf(x), buf(&y)],
            &[push[0], push[1], 0],
            self.grid(n * c)?,
        )?;
        Ok(y)
    }

    fn global_avgpool_backward(&self, dy: &Tensor<Self>, input: &Shape) -> Result<Tensor<Self>> {
        let [n, c, h, w] = input.nchw("global_avgpool")?;
        same_shape(
            "global_avgpool_backward",
            &Shape::new([n, c, 1, 1]),
            &dy.shape,
        )?;
        let inv = 1.0 / (h * w) as f32;
        let dx = self.empty(input.clone())?;
        let push = words(&[dx.numel(), h * w])?;
        self.run(
            Kernel::AvgpoolBackward,
            &[buf(dy), buf(&dx)],
            &[push[0], push[1], inv.to_bits()],
            self.grid(dx.numel())?,
        )?;
        Ok(dx)
    }

    fn join_forward(&self, inputs: &[&Tensor<Self>]) -> Result<Tensor<Self>> {
        let shapes: Vec<&Shape> = inputs.iter().map(|t| &t.shape).collect();
        join::check(&shapes)?;
        let first = inputs[0];
        let y = self.empty(first.shape.clone())?;
        let n = first.numel();
        if inputs.len() == 1 {
            let ctx = &self.shared.ctx;
            lock(&self.shared.work).stream.copy(
                &ctx.device,
                ctx.queue,
                buf(first),
                buf(&y),
                (n * 4) as u64,
            )?;
            return Ok(y);
        }
        let count = inputs.len() as f32;
        let nw = words(&[n])?[0];
        let grid = self.grid(n)?;
        // y = x0 + x1, then y = y + x2, ...; the last step divides by the count.
        for (i, x) in inputs.iter().enumerate().skip(1) {
            let a = if i == 1 { buf(first) } else { buf(&y) };
            let divide = if i + 1 == inputs.len() { count } else { 0.0 };
            self.run(
                Kernel::Join,
                &[a, buf(x), buf(&y)],
                &[nw, divide.to_bits()],
                grid,
            )?;
        }
        Ok(y)
    }

    fn linear_forward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        b: &Tensor<Self>,
    ) -> Result<Tensor<Self>> {
        let [n, f, k] = linear::check(&x.shape, &w.shape, &b.shape)?;
        let y = self.empty(Shape::new([n, k]))?;
        // y = x [N, F] * w^T (w is [K, F]: element (f, j) at j * F + f).
        self.gemm(
            buf(x),
            buf(w),
            buf(&y),
            Some(buf(b)),
            [n, k, f],
            [f, 1, 1, f],
        )?;
        Ok(y)
    }

    fn linear_backward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        dy: &Tensor<Self>,
    ) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)> {
        let [n, _] = x.shape.matrix("linear")?;
        let [k, _] = w.shape.matrix("linear")?;
        let [_, f, _] = linear::check(&x.shape, &w.shape, &Shape::new([k]))?;
        same_shape("linear_backward", &Shape::new([n, k]), &dy.shape)?;
        let dx = self.empty(x.shape.clone())?;
        // dx [N, F] = dy [N, K] * w [K, F]
        self.gemm(buf(dy), buf(w), buf(&dx), None, [n, f, k], [k, 1, f, 1])?;
        let dw = self.empty(w.shape.clone())?;
        // dw [K, F] = dy^T [K, N] * x [N, F]
        self.gemm(buf(dy), buf(x), buf(&dw), None, [k, f, n], [1, k, f, 1])?;
        let db = self.empty(Shape::new([k]))?;
        self.reduce_rows(buf(dy), buf(&db), n, k, 0.0)?;
        Ok((dx, dw, db))
    }

    fn softmax_xent(
        &self,
        logits: &Tensor<Self>,
        labels: &Tensor<Self>,
    ) -> Result<(Tensor<Self>, Tensor<Self>)> {
        let [n, k] = softmax_xent::check(&logits.shape, &labels.shape)?;
        match &labels.storage.0.host {
            Some(host) => softmax_xent::check_labels(host, k)?,
            None => softmax_xent::check_labels(&self.to_host(labels)?, k)?,
        }
        let dz = self.empty(logits.shape.clone())?;
        let rows = self.alloc(Place::Device, n)?;
        let w = words(&[n, k])?;
        self.run(
            Kernel::SoftmaxXent,
            &[buf(logits), buf(labels), buf(&dz), &rows],
            &w,
            self.grid(n)?,
        )?;
        let loss = self.empty(Shape::new([1]))?;
        self.reduce_rows(&rows, buf(&loss), n, 1, n as f32)?;
        Ok((loss, dz))
    }

    fn argmax(&self, logits: &Tensor<Self>) -> Result<Tensor<Self>> {
        let [n, k] = logits.shape.matrix("argmax")?;
        let y = self.empty(Shape::new([n]))?;
        self.run(
            Kernel::Argmax,
            &[buf(logits), buf(&y)],
            &words(&[n, k])?,
            self.grid(n)?,
        )?;
        Ok(y)
    }

    fn sgd_update(
        &self,
        w: &mut Tensor<Self>,
        g: &Tensor<Self>,
        v: &mut Tensor<Self>,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<()> {
        same_shape("sgd_update", &w.shape, &g.shape)?;
        same_shape("sgd_update", &w.shape, &v.shape)?;
        let n = w.numel();
        let (w_in, w_out) = self.writable(w)?;
        let (v_in, v_out) = self.writable(v)?;
        self.run(
            Kernel::Sgd,
            &[&w_in, buf(g), &v_in, &w_out, &v_out],
            &[
                words(&[n])?[0],
                lr.to_bits(),
                momentum.to_bits(),
                weight_decay.to_bits(),
            ],
            self.grid(n)?,
        )
    }
}
