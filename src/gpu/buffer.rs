//! GPU buffers the library allocates: [`OwnedBuffer`] counts itself in the
//! context's [`AllocStats`] for as long as it lives, and is allocated inside
//! error scopes, so an out-of-memory is an `Err` and leaves the caller's
//! old buffers untouched.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use super::scope::checked;
use super::storage::Storage;
use crate::error::Result;
use crate::types::DType;

/// Usage of tensors and the module's own storage buffers.
pub(crate) const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Usage of the uniform buffers.
pub(crate) const UNIFORM_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::UNIFORM.union(wgpu::BufferUsages::COPY_DST);

/// Bytes of `numel` elements of `dtype`, rounded up to 16 so shaders may
/// read and write whole `vec4`s (at least 16).
pub(crate) fn padded_bytes(numel: usize, dtype: DType) -> u64 {
    let bytes = (numel as u64) * dtype.size() as u64;
    bytes.div_ceil(16).max(1) * 16
}

/// Counters of the GPU buffers the library holds alive on a context.
#[derive(Default)]
pub(crate) struct AllocStats {
    count: AtomicUsize,
    bytes: AtomicU64,
}

impl AllocStats {
    pub(crate) fn snapshot(&self) -> (usize, u64) {
        (
            self.count.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }
}

/// A buffer the library allocated, or an application's buffer it wraps;
/// dropping it updates the context's counters.
pub(crate) struct OwnedBuffer {
    pub(crate) buffer: wgpu::Buffer,
    stats: Option<Arc<AllocStats>>,
}

impl OwnedBuffer {
    /// Allocates `size` bytes with `usage`, inside error scopes: an
    /// out-of-memory or validation error is returned.
    pub(crate) fn new(
        device: &wgpu::Device,
        stats: &Arc<AllocStats>,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<Self> {
        let buffer = checked(device, || {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        })?;
        stats.count.fetch_add(1, Ordering::SeqCst);
        stats.bytes.fetch_add(size, Ordering::SeqCst);
        Ok(Self {
            buffer,
            stats: Some(stats.clone()),
        })
    }

    /// Wraps a buffer owned by the application (not counted).
    pub(crate) fn foreign(buffer: wgpu::Buffer) -> Self {
        Self {
            buffer,
            stats: None,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.buffer.size()
    }
}

impl Drop for OwnedBuffer {
    fn drop(&mut self) {
        if let Some(stats) = &self.stats {
            stats.count.fetch_sub(1, Ordering::SeqCst);
            stats.bytes.fetch_sub(self.buffer.size(), Ordering::SeqCst);
        }
    }
}

/// A byte range of a buffer, as bound to one binding. Compared by buffer,
/// offset and size, so bind groups can be cached by what they bind; `owner`
/// tells whether the tensor it came from is still alive (a cached bind
/// group must not keep a dropped tensor's memory).
#[derive(Debug, Clone)]
pub(crate) struct BufferSlice {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    pub owner: Option<Weak<Storage>>,
}

impl PartialEq for BufferSlice {
    fn eq(&self, other: &Self) -> bool {
        self.buffer == other.buffer && self.offset == other.offset && self.size == other.size
    }
}

impl Eq for BufferSlice {}

impl BufferSlice {
    /// The whole of `buffer`, owned by the caller for as long as it matters.
    pub fn whole(buffer: &wgpu::Buffer) -> Self {
        Self {
            buffer: buffer.clone(),
            offset: 0,
            size: buffer.size(),
            owner: None,
        }
    }

    /// Whether the tensor the slice came from is still alive.
    pub fn alive(&self) -> bool {
        self.owner.as_ref().is_none_or(|w| w.strong_count() > 0)
    }

    pub fn resource(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.size),
        })
    }
}
