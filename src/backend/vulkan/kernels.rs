//! The compute kernels: one SPIR-V module per `spirv/src/<name>.comp` (committed as
//! `spirv/<name>.spv`, rebuilt by `spirv/regen`), and one pipeline per `Kernel`, created on
//! first use through a pipeline cache. A kernel's bindings are storage buffers 0..n, each read
//! or written (what the hazard tracker in `stream.rs` needs; an in-place update binds one
//! buffer twice, once each way); its shape parameters are push constants (32-bit words).

use super::err;
use crate::error::Result;
use ash::vk;

/// How a kernel uses one of its buffer bindings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

use Access::{Read as R, Write as W};

macro_rules! spv {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/spirv/",
            $name,
            ".spv"
        ))
    };
}

/// Every pipeline the backend uses. Variants that share a module differ in specialisation
/// constant 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Add,
    Mul,
    Scale,
    Relu,
    ReluBackward,
    Gemm,
    Conv2dForward,
    Conv2dDx,
    Conv2dDw,
    ReduceRows,
    BatchnormStats,
    BatchnormApply,
    BatchnormApplyRelu,
    BatchnormBackwardReduce,
    BatchnormBackwardReduceRelu,
    BatchnormBackwardDx,
    BatchnormBackwardDxRelu,
    BatchnormRunning,
    Dropout,
    MaxpoolForward,
    MaxpoolBackward,
    AvgpoolForward,
    AvgpoolBackward,
    Join,
    SoftmaxXent,
    Argmax,
    Sgd,
}

pub(crate) const KERNEL_COUNT: usize = Kernel::Sgd as usize + 1;

pub(crate) struct KernelDesc {
    pub module: &'static str,
    pub spv: &'static [u8],
    pub bindings: &'static [Access],
    pub push_words: u32,
    /// Value of specialisation constant 0, when the module has one.
    pub spec: Option<u32>,
}

/// `kernel!(module, bindings, push words[, spec constant])`.
macro_rules! kernel {
    ($module:literal, $bindings:expr, $push:expr) => {
        kernel!($module, $bindings, $push, None)
    };
    ($module:literal, $bindings:expr, $push:expr, $spec:expr) => {
        KernelDesc {
            module: $module,
            spv: spv!($module),
            bindings: $bindings,
            push_words: $push,
            spec: $spec,
        }
    };
}

impl Kernel {
    pub fn desc(self) -> KernelDesc {
        const EW: &[Access] = &[R, R, W];
        let relu = |k: Kernel| {
            Some(matches!(
                k,
                Kernel::BatchnormApplyRelu
                    | Kernel::BatchnormBackwardReduceRelu
                    | Kernel::BatchnormBackwardDxRelu
            ) as u32)
        };
        match self {
            // Specialisation constant: the OP codes of elementwise.comp.
            Kernel::Add => kernel!("elementwise", EW, 2, Some(0)),
            Kernel::Mul => kernel!("elementwise", EW, 2, Some(1)),
            Kernel::Scale => kernel!("elementwise", EW, 2, Some(2)),
            Kernel::Relu => kernel!("elementwise", EW, 2, Some(3)),
            Kernel::ReluBackward => kernel!("elementwise", EW, 2, Some(4)),
            Kernel::Gemm => kernel!("gemm", &[R, R, W, R], 9),
            Kernel::Conv2dForward => kernel!("conv2d_forward", &[R, R, W], 12),
            Kernel::Conv2dDx => kernel!("conv2d_dx", &[R, R, W], 12),
            Kernel::Conv2dDw => kernel!("conv2d_dw", &[R, R, W], 12),
            Kernel::ReduceRows => kernel!("reduce_rows", &[R, W], 3),
            Kernel::BatchnormStats => kernel!("batchnorm_stats", &[R, W, W], 3),
            Kernel::BatchnormApply | Kernel::BatchnormApplyRelu => {
                kernel!("batchnorm_apply", &[R, R, R, R, R, W], 4, relu(self))
            }
            Kernel::BatchnormBackwardReduce | Kernel::BatchnormBackwardReduceRelu => kernel!(
                "batchnorm_backward_reduce",
                &[R, R, R, R, R, W, W],
                4,
                relu(self)
            ),
            Kernel::BatchnormBackwardDx | Kernel::BatchnormBackwardDxRelu => kernel!(
                "batchnorm_backward_dx",
                &[R, R, R, R, R, R, R, R, W],
                5,
                relu(self)
            ),
            Kernel::BatchnormRunning => kernel!("batchnorm_running", &[R, R, R, R, W, W], 3),
            Kernel::Dropout => kernel!("dropout", &[R, W, W], 5),
            Kernel::MaxpoolForward => kernel!("pool_max_forward", &[R, W], 8),
            Kernel::MaxpoolBackward => kernel!("pool_max_backward", &[R, R, W], 8),
            // Specialisation constant: FORWARD.
            Kernel::AvgpoolForward => kernel!("pool_avg", &[R, W], 3, Some(1)),
            Kernel::AvgpoolBackward => kernel!("pool_avg", &[R, W], 3, Some(0)),
            Kernel::Join => kernel!("join", &[R, R, W], 2),
            Kernel::SoftmaxXent => kernel!("softmax_xent", &[R, R, W, W], 2),
            Kernel::Argmax => kernel!("softmax_xent_argmax", &[R, W], 2),
            Kernel::Sgd => kernel!("sgd", &[R, R, R, W, W], 4),
        }
    }
}

/// A compute pipeline with its layouts.
pub(crate) struct Pipeline {
    pub pipeline: vk::Pipeline,
    pub layout: vk::PipelineLayout,
    pub set_layout: vk::DescriptorSetLayout,
    pub bindings: &'static [Access],
    pub push_words: u32,
}

/// Pipelines created on first use, kept until the device goes.
pub(crate) struct Kernels {
    cache: vk::PipelineCache,
    pipelines: Vec<Option<Pipeline>>,
}

impl Kernels {
    pub fn new(device: &ash::Device) -> Result<Self> {
        // SAFETY: an empty pipeline cache on a live device.
        let cache =
            unsafe { device.create_pipeline_cache(&vk::PipelineCacheCreateInfo::default(), None) }
                .map_err(|e| err(format!("vkCreatePipelineCache: {e}")))?;
        Ok(Kernels {
            cache,
            pipelines: (0..KERNEL_COUNT).map(|_| None).collect(),
        })
    }

    pub fn get(&mut self, device: &ash::Device, k: Kernel) -> Result<&Pipeline> {
        let slot = k as usize;
        if self.pipelines[slot].is_none() {
            self.pipelines[slot] = Some(self.create(device, k)?);
        }
        self.pipelines[slot]
            .as_ref()
            .ok_or_else(|| err("pipeline slot empty after creation"))
    }

    fn create(&self, device: &ash::Device, k: Kernel) -> Result<Pipeline> {
        let d = k.desc();
        let code = ash::util::read_spv(&mut std::io::Cursor::new(d.spv))
            .map_err(|e| err(format!("spirv/{}.spv is not SPIR-V: {e}", d.module)))?;
        let bindings: Vec<vk::DescriptorSetLayoutBinding<'_>> = (0..d.bindings.len() as u32)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .size(d.push_words * 4)];
        let spec_data = d.spec.unwrap_or(0).to_ne_bytes();
        let spec_entries = [vk::SpecializationMapEntry::default()
            .constant_id(0)
            .offset(0)
            .size(4)];
        let spec = vk::SpecializationInfo::default()
            .map_entries(&spec_entries)
            .data(&spec_data);
        // SAFETY: every create-info below points at locals that outlive the calls; objects are
        // destroyed on the error paths.
        unsafe {
            let set_layout = device
                .create_descriptor_set_layout(
                    &vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings),
                    None,
                )
                .map_err(|e| err(format!("vkCreateDescriptorSetLayout: {e}")))?;
            let set_layouts = [set_layout];
            let layout = match device.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default()
                    .set_layouts(&set_layouts)
                    .push_constant_ranges(&ranges),
                None,
            ) {
                Ok(l) => l,
                Err(e) => {
                    device.destroy_descriptor_set_layout(set_layout, None);
                    return Err(err(format!("vkCreatePipelineLayout: {e}")));
                }
            };
            let module = match device
                .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&code), None)
            {
                Ok(m) => m,
                Err(e) => {
                    device.destroy_pipeline_layout(layout, None);
                    device.destroy_descriptor_set_layout(set_layout, None);
                    return Err(err(format!("vkCreateShaderModule ({}): {e}", d.module)));
                }
            };
            let mut stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(c"main");
            if d.spec.is_some() {
                stage = stage.specialization_info(&spec);
            }
            let info = [vk::ComputePipelineCreateInfo::default()
                .stage(stage)
                .layout(layout)];
            let created = device.create_compute_pipelines(self.cache, &info, None);
            device.destroy_shader_module(module, None);
            match created {
                Ok(p) => Ok(Pipeline {
                    pipeline: p[0],
                    layout,
                    set_layout,
                    bindings: d.bindings,
                    push_words: d.push_words,
                }),
                Err((_, e)) => {
                    device.destroy_pipeline_layout(layout, None);
                    device.destroy_descriptor_set_layout(set_layout, None);
                    Err(err(format!("vkCreateComputePipelines ({:?}): {e}", k)))
                }
            }
        }
    }

    pub fn destroy(&mut self, device: &ash::Device) {
        // SAFETY: the device is idle; nothing uses these objects any more.
        unsafe {
            for p in self.pipelines.iter_mut().filter_map(Option::take) {
                device.destroy_pipeline(p.pipeline, None);
                device.destroy_pipeline_layout(p.layout, None);
                device.destroy_descriptor_set_layout(p.set_layout, None);
            }
            device.destroy_pipeline_cache(self.cache, None);
        }
        self.cache = vk::PipelineCache::null();
    }
}
