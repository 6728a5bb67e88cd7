//! One `wgpu::Instance` per set of backends and flags for the whole
//! process, shared by every context.
//!
//! Destroying the last Vulkan instance makes the Vulkan loader unload the
//! driver's libraries; NVIDIA's driver leaves thread-exit handlers behind
//! in the threads that used it, which then jump into unmapped code when
//! those threads end (seen on an H100 with driver 580: a segmentation fault
//! as a test thread that had created and dropped contexts exited; wgpu
//! issues #1439 and #8365 describe the family). Keeping the instance for
//! the process's lifetime keeps the driver loaded; creating instances is
//! also slow, so contexts made one after another gain from it.

use std::sync::{Mutex, OnceLock};

type Key = (wgpu::Backends, wgpu::InstanceFlags);

static INSTANCES: OnceLock<Mutex<Vec<(Key, wgpu::Instance)>>> = OnceLock::new();

/// The process's instance for `desc`'s backends and flags, created from
/// `desc` on first use. A poisoned lock (a panic while another thread
/// created an instance) falls back to a fresh, unshared instance.
pub(crate) fn shared_instance(desc: wgpu::InstanceDescriptor) -> wgpu::Instance {
    let key = (desc.backends, desc.flags);
    let Ok(mut instances) = INSTANCES.get_or_init(Default::default).lock() else {
        return wgpu::Instance::new(desc);
    };
    if let Some((_, instance)) = instances.iter().find(|(k, _)| *k == key) {
        return instance.clone();
    }
    let instance = wgpu::Instance::new(desc);
    instances.push((key, instance.clone()));
    instance
}
