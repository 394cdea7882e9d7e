//! The Vulkan instance, the chosen physical device, its logical device and compute queue, and
//! the validation-layer messenger. Loading goes through `ash::Entry::load()`, so a machine
//! without libvulkan gets an `Error::Backend`, never a panic.

use super::err;
use crate::error::Result;
use ash::vk;
use std::ffi::{CStr, c_void};
use std::fmt;
use std::sync::{Arc, Mutex};

const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// One physical device as `list_devices` reports it.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// The index `Vulkan::new(Some(index))` takes.
    pub index: usize,
    pub name: String,
    /// "discrete", "integrated", "virtual", "cpu" or "other".
    pub kind: &'static str,
    /// Size of the largest device-local memory heap, in bytes.
    pub memory_bytes: u64,
    pub subgroup_size: u32,
    /// Driver name and version, as the driver reports them.
    pub driver: String,
    /// Vulkan version the device supports, "major.minor.patch".
    pub api_version: String,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vulkan:{} {} ({}, {:.1} GiB, subgroup {}, driver {}, Vulkan {})",
            self.index,
            self.name,
            self.kind,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.subgroup_size,
            self.driver,
            self.api_version
        )
    }
}

/// What the validation layer reported (only filled when validation is on).
#[derive(Clone, Debug, Default)]
pub struct ValidationReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// A handle on the validation messages that stays readable after the backend is gone.
#[derive(Clone, Debug, Default)]
pub struct ValidationLog(Arc<Mutex<ValidationReport>>);

impl ValidationLog {
    pub fn report(&self) -> ValidationReport {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Limits the backend checks before it records work.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_storage_buffer_range: u64,
    pub max_workgroup_count: [u32; 3],
}

/// The instance and its messenger; destroyed on drop (after the device, see `Context`).
struct Base {
    entry: ash::Entry,
    instance: ash::Instance,
    messenger: Option<(ash::ext::debug_utils::Instance, vk::DebugUtilsMessengerEXT)>,
}

impl Drop for Base {
    fn drop(&mut self) {
        // SAFETY: every object made from the instance is gone (a `Context` destroys its
        // device before its `Base` drops).
        unsafe {
            if let Some((du, m)) = self.messenger.take() {
                du.destroy_debug_utils_messenger(m, None);
            }
            self.instance.destroy_instance(None);
        }
    }
}

pub(crate) struct Context {
    pub physical: vk::PhysicalDevice,
    pub info: DeviceInfo,
    pub limits: Limits,
    pub device: ash::Device,
    pub queue: vk::Queue,
    pub queue_family: u32,
    base: Base,
    /// The messenger's user data; shared so that messages sent while the device is destroyed
    /// (leaked objects) can still be read afterwards. Declared after `base`: it must outlive
    /// the messenger.
    log: ValidationLog,
}

fn vk_version(v: u32) -> String {
    format!(
        "{}.{}.{}",
        vk::api_version_major(v),
        vk::api_version_minor(v),
        vk::api_version_patch(v)
    )
}

fn kind_name(t: vk::PhysicalDeviceType) -> &'static str {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => "discrete",
        vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated",
        vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual",
        vk::PhysicalDeviceType::CPU => "cpu",
        _ => "other",
    }
}

/// Preference when no index is given: discrete, integrated, virtual, CPU, anything else.
fn kind_rank(kind: &str) -> usize {
    ["discrete", "integrated", "virtual", "cpu"]
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(4)
}

fn load_entry() -> Result<ash::Entry> {
    // SAFETY: loading the system's Vulkan loader runs its initialisation code; that is the
    // documented way to use the `loaded` feature.
    unsafe { ash::Entry::load() }
        .map_err(|e| err(format!("cannot load the Vulkan loader (libvulkan): {e}")))
}

unsafe extern "system" fn on_message(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    user: *mut c_void,
) -> vk::Bool32 {
    if data.is_null() || user.is_null() {
        return vk::FALSE;
    }
    // SAFETY: the layer passes a valid callback-data struct; `user` points at the report that
    // the context keeps alive until after it has destroyed the messenger.
    let (data, report) = unsafe { (&*data, &*(user as *const Mutex<ValidationReport>)) };
    let text = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-null strings from the layer are NUL-terminated.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let msg = format!(
        "[{}] {}",
        text(data.p_message_id_name),
        text(data.p_message)
    );
    if let Ok(mut r) = report.lock() {
        if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR) {
            r.errors.push(msg);
        } else if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::WARNING) {
            r.warnings.push(msg);
        }
    }
    vk::FALSE
}

struct InstanceParts {
    entry: ash::Entry,
    instance: ash::Instance,
}

fn create_instance(
    validation: bool,
    messenger_info: Option<&mut vk::DebugUtilsMessengerCreateInfoEXT<'_>>,
) -> Result<InstanceParts> {
    let entry = load_entry()?;
    // SAFETY: plain queries on a loaded entry.
    let loader_version = unsafe { entry.try_enumerate_instance_version() }
        .map_err(|e| err(format!("vkEnumerateInstanceVersion: {e}")))?
        .unwrap_or(vk::API_VERSION_1_0);
    if loader_version < vk::API_VERSION_1_1 {
        return Err(err(format!(
            "the Vulkan loader supports only Vulkan {}; 1.1 is needed",
            vk_version(loader_version)
        )));
    }
    let api_version = loader_version.min(vk::API_VERSION_1_3);
    let app = vk::ApplicationInfo::default()
        .application_name(c"fractalnet")
        .engine_name(c"fractalnet")
        .api_version(api_version);
    let mut layers = Vec::new();
    let mut extensions = Vec::new();
    let enables = [vk::ValidationFeatureEnableEXT::SYNCHRONIZATION_VALIDATION];
    let mut features = vk::ValidationFeaturesEXT::default().enabled_validation_features(&enables);
    let mut info = vk::InstanceCreateInfo::default().application_info(&app);
    if validation {
        // SAFETY: plain queries on a loaded entry.
        let available = unsafe { entry.enumerate_instance_layer_properties() }
            .map_err(|e| err(format!("vkEnumerateInstanceLayerProperties: {e}")))?;
        if !available
            .iter()
            .any(|l| l.layer_name_as_c_str() == Ok(VALIDATION_LAYER))
        {
            return Err(err(
                "validation was requested (FRACTALNET_VK_VALIDATION=1) but \
                 VK_LAYER_KHRONOS_validation is not installed (Debian: vulkan-validationlayers)",
            ));
        }
        // SAFETY: as above.
        let layer_exts =
            unsafe { entry.enumerate_instance_extension_properties(Some(VALIDATION_LAYER)) }
                .map_err(|e| err(format!("vkEnumerateInstanceExtensionProperties: {e}")))?;
        let has = |name: &CStr| {
            layer_exts
                .iter()
                .any(|e| e.extension_name_as_c_str() == Ok(name))
        };
        layers.push(VALIDATION_LAYER.as_ptr());
        extensions.push(ash::ext::debug_utils::NAME.as_ptr());
        if has(ash::ext::validation_features::NAME) {
            extensions.push(ash::ext::validation_features::NAME.as_ptr());
            info = info.push_next(&mut features);
        } else {
            return Err(err(
                "the validation layer lacks VK_EXT_validation_features, needed to turn on \
                 synchronization validation",
            ));
        }
        if let Some(m) = messenger_info {
            info = info.push_next(m);
        }
    }
    info = info
        .enabled_layer_names(&layers)
        .enabled_extension_names(&extensions);
    // SAFETY: every pointer in `info` refers to locals that outlive the call.
    let instance = unsafe { entry.create_instance(&info, None) }
        .map_err(|e| err(format!("vkCreateInstance: {e}")))?;
    Ok(InstanceParts { entry, instance })
}

struct Candidate {
    physical: vk::PhysicalDevice,
    info: DeviceInfo,
    limits: Limits,
    queue_family: u32,
    /// Why the kernels cannot run here (a limit under what they need), if so.
    unsuitable: Option<String>,
}

/// What the kernels need beyond the Vulkan 1.1 minimums: workgroups of 256 invocations
/// (16 x 16 for the GEMM tiles), up to 9 storage buffers per kernel, 8.3 KiB of shared memory.
fn unsuitable(l: &vk::PhysicalDeviceLimits) -> Option<String> {
    let needs = [
        (
            "maxComputeWorkGroupInvocations",
            l.max_compute_work_group_invocations,
            256,
        ),
        (
            "maxComputeWorkGroupSize.x",
            l.max_compute_work_group_size[0],
            256,
        ),
        (
            "maxPerStageDescriptorStorageBuffers",
            l.max_per_stage_descriptor_storage_buffers,
            9,
        ),
        (
            "maxComputeSharedMemorySize",
            l.max_compute_shared_memory_size,
            16 * 1024,
        ),
    ];
    needs
        .iter()
        .find(|(_, have, need)| have < need)
        .map(|(name, have, need)| format!("{name} is {have}, the kernels need {need}"))
}

fn describe(instance: &ash::Instance, index: usize, pd: vk::PhysicalDevice) -> Option<Candidate> {
    // SAFETY: `pd` came from this instance; the chained structs live on this stack frame.
    unsafe {
        let props = instance.get_physical_device_properties(pd);
        if props.api_version < vk::API_VERSION_1_1 {
            return None;
        }
        let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
        let mut driver = vk::PhysicalDeviceDriverProperties::default();
        let has_driver_props = props.api_version >= vk::API_VERSION_1_2;
        {
            let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut subgroup);
            if has_driver_props {
                p2 = p2.push_next(&mut driver);
            }
            instance.get_physical_device_properties2(pd, &mut p2);
        }
        let mem = instance.get_physical_device_memory_properties(pd);
        let memory_bytes = mem.memory_heaps[..mem.memory_heap_count as usize]
            .iter()
            .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
            .map(|h| h.size)
            .max()
            .unwrap_or(0);
        let families = instance.get_physical_device_queue_family_properties(pd);
        let queue_family = families
            .iter()
            .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE) && f.queue_count > 0)?
            as u32;
        let name = props
            .device_name_as_c_str()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unnamed device".into());
        let driver_text = if has_driver_props {
            let n = driver
                .driver_name_as_c_str()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let i = driver
                .driver_info_as_c_str()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{n} {i}").trim().to_string()
        } else {
            format!("version {:#x}", props.driver_version)
        };
        Some(Candidate {
            physical: pd,
            info: DeviceInfo {
                index,
                name,
                kind: kind_name(props.device_type),
                memory_bytes,
                subgroup_size: subgroup.subgroup_size,
                driver: driver_text,
                api_version: vk_version(props.api_version),
            },
            limits: Limits {
                max_storage_buffer_range: props.limits.max_storage_buffer_range as u64,
                max_workgroup_count: props.limits.max_compute_work_group_count,
            },
            queue_family,
            unsuitable: unsuitable(&props.limits),
        })
    }
}

fn candidates(instance: &ash::Instance) -> Result<Vec<Candidate>> {
    // SAFETY: plain query on a live instance.
    let pds = unsafe { instance.enumerate_physical_devices() }
        .map_err(|e| err(format!("vkEnumeratePhysicalDevices: {e}")))?;
    Ok(pds
        .into_iter()
        .enumerate()
        .filter_map(|(i, pd)| describe(instance, i, pd))
        .collect())
}

/// Device `index`, or the preferred usable one: discrete, integrated, virtual, CPU.
fn choose(list: Vec<Candidate>, index: Option<usize>) -> Result<Candidate> {
    if let Some(i) = index {
        let c = list
            .into_iter()
            .find(|c| c.info.index == i)
            .ok_or_else(|| {
                err(format!(
                    "no Vulkan 1.1 device with a compute queue at index {i} (see `list_devices`)"
                ))
            })?;
        return match &c.unsuitable {
            Some(why) => Err(err(format!("device {}: {why}", c.info))),
            None => Ok(c),
        };
    }
    let why: Vec<String> = list
        .iter()
        .filter_map(|c| Some(format!("{}: {}", c.info, c.unsuitable.as_ref()?)))
        .collect();
    list.into_iter()
        .filter(|c| c.unsuitable.is_none())
        .min_by_key(|c| (kind_rank(c.info.kind), c.info.index))
        .ok_or_else(|| {
            let sep = if why.is_empty() { "" } else { "; " };
            err(format!(
                "no usable Vulkan 1.1 device with a compute queue found{sep}{}",
                why.join("; ")
            ))
        })
}

/// The Vulkan 1.1+ devices with a compute queue, in the loader's order.
pub fn list_devices() -> Result<Vec<DeviceInfo>> {
    let parts = create_instance(false, None)?;
    let list = candidates(&parts.instance);
    // SAFETY: nothing created from this instance is still alive.
    unsafe { parts.instance.destroy_instance(None) };
    Ok(list?.into_iter().map(|c| c.info).collect())
}

impl Context {
    pub fn new(index: Option<usize>, validation: bool) -> Result<Context> {
        let log = ValidationLog::default();
        let user = Arc::as_ptr(&log.0) as *mut c_void;
        let severity = vk::DebugUtilsMessageSeverityFlagsEXT::ERROR
            | vk::DebugUtilsMessageSeverityFlagsEXT::WARNING;
        let types = vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
            | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
            | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE;
        let messenger_info = || {
            vk::DebugUtilsMessengerCreateInfoEXT::default()
                .message_severity(severity)
                .message_type(types)
                .pfn_user_callback(Some(on_message))
                .user_data(user)
        };
        // Chained into the instance create info, for messages from vkCreateInstance itself.
        let mut creation_messenger = messenger_info();
        let parts = create_instance(validation, Some(&mut creation_messenger))?;
        let mut base = Base {
            entry: parts.entry,
            instance: parts.instance,
            messenger: None,
        };
        if validation {
            let du = ash::ext::debug_utils::Instance::new(&base.entry, &base.instance);
            // SAFETY: the user data points at `log`, which outlives the messenger.
            let m = unsafe { du.create_debug_utils_messenger(&messenger_info(), None) }
                .map_err(|e| err(format!("vkCreateDebugUtilsMessengerEXT: {e}")))?;
            base.messenger = Some((du, m));
        }
        let chosen = choose(candidates(&base.instance)?, index)?;
        let priorities = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(chosen.queue_family)
            .queue_priorities(&priorities)];
        let device_info = vk::DeviceCreateInfo::default().queue_create_infos(&queues);
        // SAFETY: the physical device belongs to this instance; `device_info` points at locals.
        let device = unsafe {
            base.instance
                .create_device(chosen.physical, &device_info, None)
        }
        .map_err(|e| err(format!("vkCreateDevice on {}: {e}", chosen.info.name)))?;
        // SAFETY: the queue family and index were requested at device creation.
        let queue = unsafe { device.get_device_queue(chosen.queue_family, 0) };
        Ok(Context {
            physical: chosen.physical,
            info: chosen.info,
            limits: chosen.limits,
            device,
            queue,
            queue_family: chosen.queue_family,
            base,
            log,
        })
    }

    pub fn instance(&self) -> &ash::Instance {
        &self.base.instance
    }

    /// The validation messages; `None` when validation is off.
    pub fn validation_log(&self) -> Option<ValidationLog> {
        self.base.messenger.as_ref().map(|_| self.log.clone())
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the owner (`Shared`) has destroyed every object made from this device and
        // waited for it to go idle before this runs. `base` (instance, messenger) drops next.
        unsafe { self.device.destroy_device(None) };
    }
}

#[cfg(test)]
mod tests {
    use super::kind_rank;

    #[test]
    fn discrete_is_preferred_then_integrated_virtual_cpu() {
        let order = ["discrete", "integrated", "virtual", "cpu", "other"];
        for w in order.windows(2) {
            assert!(kind_rank(w[0]) < kind_rank(w[1]), "{w:?}");
        }
    }
}
