//! `--device cpu | vulkan | vulkan:N | auto` and `fractalnet devices`.

use super::{CliError, CliResult};
use fractalnet::backend::vulkan::{Vulkan, list_devices};
use fractalnet::backend::{Backend, Cpu};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Vulkan(Option<usize>),
    /// A Vulkan GPU when there is one (a CPU-type Vulkan device such as lavapipe does not
    /// count), else the CPU.
    Auto,
}

pub fn parse(s: &str) -> CliResult<DeviceChoice> {
    match s {
        "cpu" => Ok(DeviceChoice::Cpu),
        "vulkan" => Ok(DeviceChoice::Vulkan(None)),
        "auto" => Ok(DeviceChoice::Auto),
        _ => match s.strip_prefix("vulkan:").map(|n| n.parse::<usize>()) {
            Some(Ok(i)) => Ok(DeviceChoice::Vulkan(Some(i))),
            _ => Err(CliError::Usage(format!(
                "--device {s}: expected cpu, vulkan, vulkan:N or auto"
            ))),
        },
    }
}

/// Work that runs on whichever backend was chosen.
pub trait OnBackend {
    fn run<B: Backend>(self, b: &B) -> CliResult<()>;
}

/// Runs `task` on the CPU backend from one of rayon's worker threads. The ops' parallel loops
/// then share their work with the other workers directly; called from outside the pool, each
/// loop would be handed to the pool while the calling thread sleeps until it is done, a futex
/// round trip per op that dominated batch-1 inference (30% of its profile).
fn run_on_cpu(task: impl OnBackend + Send, threads: Option<usize>) -> CliResult<()> {
    let c = Cpu::with_threads(threads.unwrap_or(0));
    rayon::scope(|_| task.run(&c))
}

/// Opens the chosen device, says which in one line (on stderr), and runs `task` on it.
pub fn dispatch(
    device: &str,
    threads: Option<usize>,
    task: impl OnBackend + Send,
) -> CliResult<()> {
    let cpu = || Cpu::with_threads(threads.unwrap_or(0));
    match parse(device)? {
        DeviceChoice::Cpu => run_on_cpu(task, threads),
        DeviceChoice::Vulkan(i) => {
            let v = Vulkan::new(i)?;
            eprintln!("device: {}", v.name());
            task.run(&v)
        }
        DeviceChoice::Auto => {
            let gpu = list_devices()
                .ok()
                .and_then(|d| d.into_iter().find(|d| d.kind != "cpu"));
            match gpu.map(|d| Vulkan::new(Some(d.index))) {
                Some(Ok(v)) => {
                    eprintln!("device: {} (auto: a Vulkan GPU was found)", v.name());
                    task.run(&v)
                }
                Some(Err(e)) => {
                    eprintln!(
                        "device: {} (auto: the Vulkan GPU failed to open: {e})",
                        cpu().name()
                    );
                    run_on_cpu(task, threads)
                }
                None => {
                    eprintln!("device: {} (auto: no Vulkan GPU found)", cpu().name());
                    run_on_cpu(task, threads)
                }
            }
        }
    }
}

#[derive(clap::Args)]
pub struct DevicesArgs {
    #[arg(long)]
    json: bool,
}

pub fn devices(a: DevicesArgs) -> CliResult<()> {
    let list = list_devices()?;
    if a.json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|d| serde_json::json!({"index": d.index, "name": d.name, "type": d.kind, "memory_bytes": d.memory_bytes, "subgroup_size": d.subgroup_size, "driver": d.driver, "api_version": d.api_version}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if list.is_empty() {
        println!("no Vulkan devices (the CPU backend is always available: --device cpu)");
    }
    for d in list {
        println!(
            "vulkan:{}  {}  type {}, {:.1} GiB, subgroup {}, {} (Vulkan {})",
            d.index,
            d.name,
            d.kind,
            d.memory_bytes as f64 / (1u64 << 30) as f64,
            d.subgroup_size,
            d.driver,
            d.api_version
        );
    }
    Ok(())
}
