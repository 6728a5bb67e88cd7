//! The `wgpu::Instance` of a new context (its flags: debug names off), with
//! the process's Vulkan driver kept loaded.
//!
//! Destroying the last Vulkan instance makes the Vulkan loader unload the
//! driver's libraries; NVIDIA's driver leaves thread-exit handlers behind
//! in the threads that used it, which then jump into unmapped code when
//! those threads end (seen on an H100 with driver 580: a segmentation fault
//! as a test thread that had created and dropped contexts exited; wgpu
//! issues #1439 and #8365 describe the family). One Vulkan-only instance
//! is therefore created once and kept for the process's lifetime. Each
//! context still gets an instance of its own: GL instances hold one EGL
//! context each, which contexts on different threads must not share.

use std::sync::OnceLock;

/// A Vulkan-only instance that is never dropped (see the module docs).
static VULKAN_KEEPALIVE: OnceLock<wgpu::Instance> = OnceLock::new();

/// The descriptor of a new context's instance: `backends`, wgpu's flags
/// for the build and the `WGPU_*` flag variables, with debug object names
/// off unless `WGPU_DEBUG` asks for them. The Vulkan loader (Debian 12's
/// 1.3.239) names an object by walking every instance's device list
/// without a lock, and crashed in `vkSetDebugUtilsObjectNameEXT` while
/// another thread dropped a context (`tests/reliability.rs`: about 1 run in
/// 40 with two processes at once, none in 140 without names).
pub(crate) fn descriptor(backends: wgpu::Backends) -> wgpu::InstanceDescriptor {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    let mut flags = wgpu::InstanceFlags::from_build_config();
    flags.remove(wgpu::InstanceFlags::DEBUG);
    desc.flags = flags.with_env();
    desc
}

/// A fresh instance for `desc`; where `desc` includes Vulkan, the
/// process's keep-alive Vulkan instance is created first (once), so that
/// dropping this one never unloads the driver.
pub(crate) fn context_instance(desc: wgpu::InstanceDescriptor) -> wgpu::Instance {
    if desc.backends.contains(wgpu::Backends::VULKAN) {
        VULKAN_KEEPALIVE.get_or_init(|| {
            let mut keep = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
            keep.backends = wgpu::Backends::VULKAN;
            keep.flags = desc.flags;
            wgpu::Instance::new(keep)
        });
    }
    wgpu::Instance::new(desc)
}
