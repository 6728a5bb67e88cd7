//! [`Tensor`]: a GPU buffer region with a logical shape, an element type and
//! a memory format. Host transfers are in `tensor_io.rs`; what the
//! library checks about a tensor and how it binds one, in `tensor/checks.rs`.

use std::sync::Arc;

use super::buffer::{padded_bytes, TENSOR_USAGE};
use super::context::GpuContext;
use super::storage::Storage;
use crate::error::{Error, Result};
use crate::semantics::checked_numel;
use crate::types::{DType, MemoryFormat};

mod checks;

/// A tensor living in a GPU buffer: a logical shape (channels second, as in
/// PyTorch), a [`DType`] and a [`MemoryFormat`].
///
/// Cloning is cheap: clones share the buffer, and so do
/// [`Tensor::reshape`] views. Any shape is allowed, including ones with a
/// zero dimension; at most `u32::MAX` elements.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
    format: MemoryFormat,
    /// Made by [`Tensor::from_buffer`] (or a view of such a tensor): the
    /// bytes around it may be the application's, or another tensor's where
    /// it wraps a library tensor's buffer.
    wrapped: bool,
    /// Declared last, so the buffer is released before a tensor that holds
    /// the context's last handle tears the device down.
    ctx: GpuContext,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("format", &self.format)
            .field("offset", &self.offset)
            .finish()
    }
}

/// Elements in `shape`, within what the kernels address (`u32`).
pub(crate) fn addressable_numel(shape: &[usize]) -> Result<usize> {
    let numel = checked_numel(shape)?;
    if u32::try_from(numel).is_err() {
        return Err(Error::TooLarge(format!(
            "shape {shape:?} has {numel} elements; at most {} are supported",
            u32::MAX
        )));
    }
    Ok(numel)
}

impl Tensor {
    /// A new zeroed tensor in a buffer of its own.
    pub(crate) fn alloc(
        ctx: &GpuContext,
        shape: &[usize],
        dtype: DType,
        format: MemoryFormat,
        label: &str,
    ) -> Result<Self> {
        ctx.check_alive()?;
        let numel = addressable_numel(shape)?;
        let size = padded_bytes(numel, dtype);
        let max = ctx.device().limits().max_buffer_size;
        if size > max {
            return Err(Error::TooLarge(format!(
                "shape {shape:?} needs {size} bytes; the device allows {max} per buffer"
            )));
        }
        // wgpu zero-initialises new buffers.
        let buffer = ctx.alloc(label, size, TENSOR_USAGE)?;
        let storage = ctx.storages().new_storage(buffer);
        Ok(Self::wrap(ctx, storage, 0, shape, dtype, format, false))
    }

    fn wrap(
        ctx: &GpuContext,
        storage: Arc<Storage>,
        offset: u64,
        shape: &[usize],
        dtype: DType,
        format: MemoryFormat,
        wrapped: bool,
    ) -> Self {
        Self {
            ctx: ctx.clone(),
            storage,
            offset,
            shape: shape.to_vec(),
            dtype,
            format,
            wrapped,
        }
    }

    /// A tensor of zeros, f32, channels-first.
    pub fn zeros(ctx: &GpuContext, shape: &[usize]) -> Result<Self> {
        Self::zeros_with(ctx, shape, DType::F32, MemoryFormat::ChannelsFirst)
    }

    /// A tensor of zeros of `dtype`, channels-first.
    pub fn zeros_of(ctx: &GpuContext, shape: &[usize], dtype: DType) -> Result<Self> {
        Self::zeros_with(ctx, shape, dtype, MemoryFormat::ChannelsFirst)
    }

    /// A tensor of zeros of `dtype` in `format`.
    pub fn zeros_with(
        ctx: &GpuContext,
        shape: &[usize],
        dtype: DType,
        format: MemoryFormat,
    ) -> Result<Self> {
        Self::alloc(ctx, shape, dtype, format, "batchnorm/tensor")
    }

    /// A tensor of zeros with `like`'s shape, dtype and memory format.
    pub fn zeros_like(like: &Tensor) -> Result<Self> {
        Self::zeros_with(like.context(), like.shape(), like.dtype(), like.format)
    }

    /// Wraps an application's existing buffer without copying, as an f32
    /// channels-first tensor (see [`Tensor::from_buffer_of`]).
    pub fn from_buffer(
        ctx: &GpuContext,
        buffer: wgpu::Buffer,
        offset: u64,
        shape: &[usize],
    ) -> Result<Self> {
        Self::from_buffer_of(ctx, buffer, offset, shape, DType::F32)
    }

    /// Wraps an application's existing buffer without copying. The buffer
    /// must come from this context's device (`ctx.device()`): wgpu cannot
    /// tell here a buffer of another context's device (each context has an
    /// instance of its own), and work on it would address this device's
    /// buffers instead. It needs `STORAGE` usage (and `COPY_SRC` to be read back, or when its
    /// size is not a whole number of 16 bytes past `offset`, which the
    /// kernels then read through a padded copy; `COPY_DST` to be written by
    /// [`Tensor::write_from_slice`]); `offset` must be a multiple of the
    /// device's `min_storage_buffer_offset_alignment`, and the buffer must
    /// hold `offset + numel * dtype.size()` bytes. The tensors of one
    /// context on one buffer (wrapped again, or a library tensor's own
    /// buffer) share the
    /// record of the library's writes there, which backward checks its
    /// saved input against, byte range by byte range. Writes the application
    /// makes to the buffer itself are invisible to the library (see
    /// [`BatchNorm::backward`](crate::BatchNorm::backward)).
    ///
    /// As an **output** (`forward_into`, `backward_into`), the kernels write
    /// whole vec4s: the buffer must hold the data rounded up to 16 bytes
    /// (else `LengthMismatch`), and those up to 12 bytes after the tensor
    /// are overwritten, so keep nothing of yours there.
    pub fn from_buffer_of(
        ctx: &GpuContext,
        buffer: wgpu::Buffer,
        offset: u64,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        ctx.check_alive()?;
        let numel = addressable_numel(shape)?;
        let align = u64::from(ctx.device().limits().min_storage_buffer_offset_alignment);
        if !offset.is_multiple_of(align.max(1)) {
            return Err(Error::Misaligned {
                what: "Tensor::from_buffer offset",
                offset,
                alignment: align,
            });
        }
        let need = (numel as u64)
            .checked_mul(dtype.size() as u64)
            .and_then(|b| b.checked_add(offset))
            .ok_or_else(|| Error::TooLarge(format!("shape {shape:?} at offset {offset}")))?;
        if need > buffer.size() {
            return Err(Error::LengthMismatch {
                name: "Tensor::from_buffer buffer bytes",
                expected: usize::try_from(need).unwrap_or(usize::MAX),
                actual: usize::try_from(buffer.size()).unwrap_or(usize::MAX),
            });
        }
        let missing = wgpu::BufferUsages::STORAGE - buffer.usage();
        if !missing.is_empty() {
            return Err(Error::BufferUsage {
                what: "Tensor::from_buffer",
                missing,
            });
        }
        Ok(Self::wrap(
            ctx,
            ctx.storages().storage_of(buffer),
            offset,
            shape,
            dtype,
            MemoryFormat::ChannelsFirst,
            true,
        ))
    }
}

// Accessors and views.
impl Tensor {
    /// The tensor's logical shape (channels second).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How the values are laid out in memory.
    pub fn memory_format(&self) -> MemoryFormat {
        self.format
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The underlying wgpu buffer (the data starts at [`Tensor::offset`]).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.storage.buffer.buffer
    }

    /// Byte offset of the data in [`Tensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The context the tensor lives on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// The same data under another shape with the same number of elements,
    /// without copying (e.g. `(N, C, H, W)` <-> `(N, C, H * W)`). The view
    /// shares the buffer. A channels-last tensor keeps `N` and `C` (only
    /// the spatial dimensions merge or split), since its storage order
    /// depends on them.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel = addressable_numel(shape)?;
        let same_nc = shape.get(..2).is_some() && shape.get(..2) == self.shape.get(..2);
        if numel != self.numel() || (self.format == MemoryFormat::ChannelsLast && !same_nc) {
            return Err(Error::ShapeMismatch {
                what: "Tensor::reshape",
                expected: self.shape.clone(),
                actual: shape.to_vec(),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// The same buffer read as `format`: a relabelling, not a transpose.
    /// Use it for data already stored in that order (a `(N, H, W, C)`
    /// image batch is `ChannelsLast` with logical shape `(N, C, H, W)`).
    pub fn with_memory_format(&self, format: MemoryFormat) -> Tensor {
        Tensor {
            format,
            ..self.clone()
        }
    }
}
