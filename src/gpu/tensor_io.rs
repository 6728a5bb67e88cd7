//! Host transfers of [`Tensor`]s: uploads, in-place refills and read-backs,
//! f32 and (with the `f16` feature) f16, blocking and async.

use super::context::GpuContext;
use super::readback::{read_bytes, read_bytes_async};
use super::tensor::{addressable_numel, Tensor};
use crate::error::{Error, Result};
use crate::types::{DType, MemoryFormat};

/// Checks that `len` values fill `shape`.
fn check_data_len(name: &'static str, shape: &[usize], len: usize) -> Result<()> {
    let numel = addressable_numel(shape)?;
    if numel != len {
        return Err(Error::LengthMismatch {
            name,
            expected: numel,
            actual: len,
        });
    }
    Ok(())
}

/// `bytes` rounded up to a multiple of 4 with zeros, as `write_buffer` needs.
fn pad4(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if bytes.len().is_multiple_of(4) {
        std::borrow::Cow::Borrowed(bytes)
    } else {
        let mut v = bytes.to_vec();
        v.resize(bytes.len().next_multiple_of(4), 0);
        std::borrow::Cow::Owned(v)
    }
}

impl Tensor {
    /// Uploads `data` (row-major in the logical order) as an f32
    /// channels-first tensor of `shape`; `data.len()` must equal the
    /// product of `shape`.
    pub fn from_slice(ctx: &GpuContext, data: &[f32], shape: &[usize]) -> Result<Self> {
        Self::from_slice_with_format(ctx, data, shape, MemoryFormat::ChannelsFirst)
    }

    /// Uploads `data`, stored in `format`'s order (for `ChannelsLast`,
    /// `(N, *spatial, C)` row-major), as an f32 tensor of logical `shape`
    /// `(N, C, *spatial)`.
    pub fn from_slice_with_format(
        ctx: &GpuContext,
        data: &[f32],
        shape: &[usize],
        format: MemoryFormat,
    ) -> Result<Self> {
        check_data_len("Tensor::from_slice data", shape, data.len())?;
        let t = Self::alloc(ctx, shape, DType::F32, format, "batchnorm/tensor")?;
        t.write_bytes(bytemuck::cast_slice(data))?;
        Ok(t)
    }

    /// Overwrites the tensor's f32 values with `data` (in storage order)
    /// without allocating: a training loop uploads each batch into the same
    /// tensor. Needs `COPY_DST` (tensors the library allocates have it).
    ///
    /// The write is queued (`Queue::write_buffer`) and lands before the next
    /// submission: work recorded with `encode_forward` / `encode_backward`
    /// but not yet submitted sees the new values, so refill only after
    /// submitting the encoder that reads the old ones.
    pub fn write_from_slice(&self, data: &[f32]) -> Result<()> {
        self.check_host_write("Tensor::write_from_slice data", DType::F32, data.len())?;
        self.write_bytes(bytemuck::cast_slice(data))
    }

    fn check_host_write(&self, name: &'static str, dtype: DType, len: usize) -> Result<()> {
        if self.dtype() != dtype {
            return Err(Error::DTypeMismatch {
                what: name,
                expected: self.dtype(),
                actual: dtype,
            });
        }
        check_data_len(name, self.shape(), len)?;
        self.require_usage(name, wgpu::BufferUsages::COPY_DST)?;
        let bytes = self.copy_bytes()?;
        if bytes != (len * dtype.size()) as u64 && self.is_wrapped() {
            // Queue writes are whole 4-byte words: the last word of an odd
            // number of f16 values would overwrite the 2 bytes after the
            // tensor, which in an application's buffer are its data.
            return Err(Error::Misaligned {
                what: "f16 host write into an application's buffer: the byte count of an odd number of values",
                offset: (len * dtype.size()) as u64,
                alignment: 4,
            });
        }
        Ok(())
    }

    /// Queues `bytes` into the buffer at the tensor's offset; the write is
    /// ordered before any later submission.
    fn write_bytes(&self, bytes: &[u8]) -> Result<()> {
        let ctx = self.context();
        if bytes.is_empty() {
            return ctx.check_alive();
        }
        ctx.scoped(|| {
            ctx.queue()
                .write_buffer(self.buffer(), self.offset(), &pad4(bytes));
            Ok(())
        })?;
        self.record_write();
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Vec<f32> {
        match self.dtype() {
            DType::F32 => {
                let mut v: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
                v.truncate(self.numel());
                v
            }
            #[cfg(feature = "f16")]
            DType::F16 => self
                .decode_f16(bytes)
                .into_iter()
                .map(half::f16::to_f32)
                .collect(),
        }
    }

    /// The tensor's bytes in storage order, blocking (none when empty).
    fn read_raw(&self, what: &'static str) -> Result<Vec<u8>> {
        let _span = crate::trace::span!("Tensor::to_vec", numel = self.numel());
        if self.numel() == 0 {
            self.context().check_alive()?;
            return Ok(Vec::new());
        }
        self.require_usage(what, wgpu::BufferUsages::COPY_SRC)?;
        read_bytes(
            self.context(),
            self.buffer(),
            self.offset(),
            self.copy_bytes()?,
        )
    }

    /// [`Tensor::read_raw`] without blocking.
    async fn read_raw_async(&self, what: &'static str) -> Result<Vec<u8>> {
        if self.numel() == 0 {
            self.context().check_alive()?;
            return Ok(Vec::new());
        }
        self.require_usage(what, wgpu::BufferUsages::COPY_SRC)?;
        let (ctx, bytes) = (self.context(), self.copy_bytes()?);
        let read = read_bytes_async(ctx, self.buffer(), self.offset(), bytes);
        crate::trace::instrument!("Tensor::to_vec_async", read).await
    }

    /// Copies the tensor to the host as f32 in storage order (f16 values
    /// are widened), blocking until the GPU is done.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        Ok(self.decode(&self.read_raw("Tensor::to_vec")?))
    }

    /// [`Tensor::to_vec`] without blocking the calling thread: the future
    /// resolves once the GPU has finished. Waiting happens on the context's
    /// poll thread, and the future is woken only by wgpu's map callback, so
    /// the awaiting thread stays idle.
    pub async fn to_vec_async(&self) -> Result<Vec<f32>> {
        Ok(self.decode(&self.read_raw_async("Tensor::to_vec_async").await?))
    }
}

#[cfg(feature = "f16")]
impl Tensor {
    /// Uploads f16 `data` as an f16 channels-first tensor of `shape`.
    /// Batch norm on f16 tensors needs the adapter's `SHADER_F16` feature.
    pub fn from_f16(ctx: &GpuContext, data: &[half::f16], shape: &[usize]) -> Result<Self> {
        Self::from_f16_with_format(ctx, data, shape, MemoryFormat::ChannelsFirst)
    }

    /// Uploads f16 `data` stored in `format`'s order.
    pub fn from_f16_with_format(
        ctx: &GpuContext,
        data: &[half::f16],
        shape: &[usize],
        format: MemoryFormat,
    ) -> Result<Self> {
        check_data_len("Tensor::from_f16 data", shape, data.len())?;
        let t = Self::alloc(ctx, shape, DType::F16, format, "batchnorm/tensor")?;
        t.write_bytes(bytemuck::cast_slice(data))?;
        Ok(t)
    }

    /// Overwrites an f16 tensor's values with `data` without allocating;
    /// queued like [`Tensor::write_from_slice`]. An odd number of values in
    /// an application's buffer ([`Tensor::from_buffer_of`]) is
    /// `Err(Misaligned)`: queue writes are whole 4-byte words, and the last
    /// one would overwrite the 2 bytes after the tensor.
    pub fn write_from_f16(&self, data: &[half::f16]) -> Result<()> {
        self.check_host_write("Tensor::write_from_f16 data", DType::F16, data.len())?;
        self.write_bytes(bytemuck::cast_slice(data))
    }

    fn decode_f16(&self, bytes: &[u8]) -> Vec<half::f16> {
        let mut v: Vec<half::f16> = bytemuck::pod_collect_to_vec(bytes);
        v.truncate(self.numel());
        v
    }

    fn check_f16(&self, what: &'static str) -> Result<()> {
        if self.dtype() != DType::F16 {
            return Err(Error::DTypeMismatch {
                what,
                expected: DType::F16,
                actual: self.dtype(),
            });
        }
        Ok(())
    }

    /// Copies an f16 tensor to the host as f16 values (blocking).
    pub fn to_vec_f16(&self) -> Result<Vec<half::f16>> {
        self.check_f16("Tensor::to_vec_f16")?;
        Ok(self.decode_f16(&self.read_raw("Tensor::to_vec_f16")?))
    }

    /// [`Tensor::to_vec_f16`] as a future (see [`Tensor::to_vec_async`]).
    pub async fn to_vec_f16_async(&self) -> Result<Vec<half::f16>> {
        self.check_f16("Tensor::to_vec_f16_async")?;
        let bytes = self.read_raw_async("Tensor::to_vec_f16_async").await?;
        Ok(self.decode_f16(&bytes))
    }
}
