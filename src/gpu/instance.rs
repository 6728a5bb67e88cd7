//! The `wgpu::Instance` of a new context, with the process's Vulkan driver
//! kept loaded.
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
