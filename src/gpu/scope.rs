//! Error scopes: wgpu reports validation and out-of-memory errors
//! asynchronously; running the calls that may fail inside scopes turns
//! them into an `Err` of the call that caused them.

use crate::error::Result;

/// Runs `f` in its own validation and out-of-memory error scopes and
/// returns what wgpu reported as an `Err` (out of memory first).
pub(crate) fn checked<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f();
    let v = pollster::block_on(validation.pop());
    let o = pollster::block_on(oom.pop());
    match o.or(v) {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}
