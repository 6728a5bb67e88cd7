//! [`Tensor`]: an f32 GPU buffer with a row-major shape.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::context::GpuContext;
use crate::error::{Error, Result};

/// Element type of a [`Tensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half), stored on the GPU and computed with f32
    /// accumulation; needs the adapter's `SHADER_F16` feature.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// Bytes of f32 data rounded up so shaders may read and write whole `vec4`s.
pub(crate) fn padded_bytes(numel: usize) -> u64 {
    padded_bytes_of(numel, DType::F32)
}

/// Bytes of `numel` elements of `dtype`, rounded up to 16.
pub(crate) fn padded_bytes_of(numel: usize, dtype: DType) -> u64 {
    let bytes = (numel as u64) * dtype.size() as u64;
    bytes.div_ceil(16).max(1) * 16
}

/// Counters of the GPU buffers this crate holds alive on a context.
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

/// A buffer this crate allocated; dropping it releases the GPU memory and
/// updates the context's allocation counters.
pub(crate) struct OwnedBuffer {
    pub(crate) buffer: wgpu::Buffer,
    ctx: Option<GpuContext>,
}

impl OwnedBuffer {
    /// Allocates a storage buffer of `size` bytes on `ctx`.
    pub(crate) fn new(ctx: &GpuContext, label: &str, size: u64, usage: wgpu::BufferUsages) -> Self {
        let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        let stats = &ctx.inner.stats;
        stats.count.fetch_add(1, Ordering::SeqCst);
        stats.bytes.fetch_add(size, Ordering::SeqCst);
        Self {
            buffer,
            ctx: Some(ctx.clone()),
        }
    }

    /// Wraps a buffer owned by the application (not counted).
    fn foreign(buffer: wgpu::Buffer) -> Self {
        Self { buffer, ctx: None }
    }
}

impl Drop for OwnedBuffer {
    fn drop(&mut self) {
        if let Some(ctx) = &self.ctx {
            let stats = &ctx.inner.stats;
            stats.count.fetch_sub(1, Ordering::SeqCst);
            stats.bytes.fetch_sub(self.buffer.size(), Ordering::SeqCst);
        }
    }
}

pub(crate) const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A tensor living in a GPU buffer, with a row-major shape and a
/// [`DType`] (f32 unless made with [`Tensor::from_f16`] or
/// [`Tensor::zeros_of`]).
///
/// Cloning is cheap: clones share the buffer. Any shape is allowed,
/// including ones with a zero dimension.
#[derive(Clone)]
pub struct Tensor {
    ctx: GpuContext,
    buf: Arc<OwnedBuffer>,
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("offset", &self.offset)
            .finish()
    }
}

/// Checks that `len` values fill `shape`.
fn check_data_len(name: &'static str, shape: &[usize], len: usize) -> Result<()> {
    let numel = checked_numel(shape)?;
    if numel != len {
        return Err(Error::LengthMismatch {
            name,
            expected: numel,
            actual: len,
        });
    }
    Ok(())
}

/// Number of elements of `shape`, or an error on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Error::TooLarge(format!("shape {shape:?} overflows")))
    })
}

impl Tensor {
    /// Allocates an uninitialised-by-contract (actually zeroed) tensor.
    pub(crate) fn empty(
        ctx: &GpuContext,
        shape: &[usize],
        dtype: DType,
        label: &str,
    ) -> Result<Self> {
        ctx.check_alive()?;
        let numel = checked_numel(shape)?;
        let size = padded_bytes_of(numel, dtype);
        let limits = ctx.device().limits();
        if size > limits.max_buffer_size || numel > u32::MAX as usize {
            return Err(Error::TooLarge(format!(
                "shape {shape:?} needs {size} bytes; the device allows {} per buffer",
                limits.max_buffer_size
            )));
        }
        let buf = ctx.scoped(|| Ok(OwnedBuffer::new(ctx, label, size, TENSOR_USAGE)))?;
        Ok(Self {
            ctx: ctx.clone(),
            buf: Arc::new(buf),
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads `data` as a tensor of `shape` (`data.len()` must equal the
    /// product of `shape`).
    pub fn from_slice(ctx: &GpuContext, data: &[f32], shape: &[usize]) -> Result<Self> {
        check_data_len("Tensor::from_slice data", shape, data.len())?;
        Self::upload(ctx, bytemuck::cast_slice(data), shape, DType::F32)
    }

    /// Uploads f16 `data` as an f16 tensor of `shape`. Batch norm on f16
    /// tensors needs the adapter's `SHADER_F16` feature.
    pub fn from_f16(ctx: &GpuContext, data: &[half::f16], shape: &[usize]) -> Result<Self> {
        check_data_len("Tensor::from_f16 data", shape, data.len())?;
        let mut bytes: Vec<u8> = bytemuck::cast_slice(data).to_vec();
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        Self::upload(ctx, &bytes, shape, DType::F16)
    }

    fn upload(ctx: &GpuContext, bytes: &[u8], shape: &[usize], dtype: DType) -> Result<Self> {
        let t = Self::empty(ctx, shape, dtype, "batchnorm/tensor")?;
        if !bytes.is_empty() {
            ctx.scoped(|| {
                ctx.queue().write_buffer(&t.buf.buffer, 0, bytes);
                Ok(())
            })?;
        }
        Ok(t)
    }

    /// An f32 tensor of zeros.
    pub fn zeros(ctx: &GpuContext, shape: &[usize]) -> Result<Self> {
        Self::zeros_of(ctx, shape, DType::F32)
    }

    /// A tensor of zeros of `dtype`.
    pub fn zeros_of(ctx: &GpuContext, shape: &[usize], dtype: DType) -> Result<Self> {
        // wgpu zero-initialises new buffers.
        Self::empty(ctx, shape, dtype, "batchnorm/tensor")
    }

    /// Wraps an application's existing buffer without copying. The buffer
    /// needs `STORAGE | COPY_SRC` usage (and `COPY_DST` to be written by
    /// copies); `offset` must be a multiple of the device's
    /// `min_storage_buffer_offset_alignment`, and the buffer must hold
    /// `offset + numel * 4` bytes.
    pub fn from_buffer(
        ctx: &GpuContext,
        buffer: wgpu::Buffer,
        offset: u64,
        shape: &[usize],
    ) -> Result<Self> {
        let numel = checked_numel(shape)?;
        let align = u64::from(ctx.device().limits().min_storage_buffer_offset_alignment);
        if !offset.is_multiple_of(align) {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} is not a multiple of {align}"
            )));
        }
        let need = offset + (numel as u64) * 4;
        if need > buffer.size() {
            return Err(Error::InvalidArgument(format!(
                "buffer of {} bytes cannot hold {numel} f32 at offset {offset}",
                buffer.size()
            )));
        }
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::InvalidArgument(
                "buffer needs wgpu::BufferUsages::STORAGE".into(),
            ));
        }
        Ok(Self {
            ctx: ctx.clone(),
            buf: Arc::new(OwnedBuffer::foreign(buffer)),
            offset,
            shape: shape.to_vec(),
            dtype: DType::F32,
        })
    }

    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The underlying wgpu buffer (the data starts at [`Tensor::offset`]).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf.buffer
    }

    /// Byte offset of the data in [`Tensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The context the tensor lives on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Bytes a shader may bind for this tensor: the data rounded up to a
    /// whole `vec4` when the buffer has room, else the exact data.
    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        self.window(0, self.numel())
    }

    /// This tensor when its buffer has room for whole `vec4` reads, else a
    /// padded copy recorded into `encoder` (the kernels read `vec4`s).
    pub(crate) fn padded(&self, encoder: &mut wgpu::CommandEncoder) -> Result<Tensor> {
        if self.is_padded() {
            return Ok(self.clone());
        }
        let copy = Tensor::zeros_of(&self.ctx, &self.shape, self.dtype)?;
        encoder.copy_buffer_to_buffer(
            &self.buf.buffer,
            self.offset,
            &copy.buf.buffer,
            0,
            self.copy_bytes()?,
        );
        Ok(copy)
    }

    /// Whether the buffer has room for whole `vec4` writes past the end.
    pub(crate) fn is_padded(&self) -> bool {
        self.buf.buffer.size().saturating_sub(self.offset)
            >= padded_bytes_of(self.numel(), self.dtype)
    }

    /// Binding of elements `[start, start + count)` (rounded up to a whole
    /// `vec4` where the buffer has room).
    pub(crate) fn window(&self, start: usize, count: usize) -> wgpu::BindingResource<'_> {
        let offset = self.offset + (start * self.dtype.size()) as u64;
        let avail = self.buf.buffer.size().saturating_sub(offset);
        let size = padded_bytes_of(count, self.dtype).min(avail).max(4);
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buf.buffer,
            offset,
            size: wgpu::BufferSize::new(size),
        })
    }

    /// Bytes to copy for the data: a multiple of 4, as wgpu requires.
    fn copy_bytes(&self) -> Result<u64> {
        let bytes = (self.numel() * self.dtype.size()) as u64;
        let rounded = bytes.next_multiple_of(4);
        if self.offset + rounded > self.buf.buffer.size() {
            return Err(Error::InvalidArgument(
                "an f16 tensor with an odd element count needs 2 bytes of room after it".into(),
            ));
        }
        Ok(rounded)
    }

    fn decode(&self, bytes: &[u8]) -> Vec<f32> {
        let n = self.numel();
        match self.dtype {
            DType::F32 => bytemuck::cast_slice::<u8, f32>(&bytes[..n * 4]).to_vec(),
            DType::F16 => bytes[..n * 2]
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }

    /// Copies the tensor to the host as f32 (f16 values are widened),
    /// blocking until the GPU is done.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        if self.numel() == 0 {
            self.ctx.check_alive()?;
            return Ok(Vec::new());
        }
        let bytes = read_bytes(&self.ctx, &self.buf.buffer, self.offset, self.copy_bytes()?)?;
        Ok(self.decode(&bytes))
    }

    /// Copies an f16 tensor to the host as f16 values.
    pub fn to_vec_f16(&self) -> Result<Vec<half::f16>> {
        if self.dtype != DType::F16 {
            return Err(Error::InvalidArgument(format!(
                "to_vec_f16 on a {:?} tensor",
                self.dtype
            )));
        }
        Ok(self
            .to_vec()?
            .into_iter()
            .map(half::f16::from_f32)
            .collect())
    }

    /// Copies the tensor to the host without blocking the calling thread:
    /// the returned future resolves once the GPU has finished. It drives
    /// the device with non-blocking polls, so it also completes on runtimes
    /// where nothing else polls the device.
    pub async fn to_vec_async(&self) -> Result<Vec<f32>> {
        let numel = self.numel();
        if numel == 0 {
            self.ctx.check_alive()?;
            return Ok(Vec::new());
        }
        let bytes = self.copy_bytes()?;
        let staging = copy_to_staging(&self.ctx, &self.buf.buffer, self.offset, bytes)?;
        let rx = start_map(&staging.buffer);
        let result = PollUntil {
            device: self.ctx.device().clone(),
            receive: Box::pin(rx.receive()),
        }
        .await;
        self.ctx.check_alive()?;
        Ok(self.decode(&finish_map(result, &staging.buffer)?))
    }
}

type MapReceiver = futures_intrusive::channel::shared::OneshotReceiver<
    std::result::Result<(), wgpu::BufferAsyncError>,
>;

fn start_map(buffer: &wgpu::Buffer) -> MapReceiver {
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        tx.send(r).ok();
    });
    rx
}

fn finish_map(
    result: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    buffer: &wgpu::Buffer,
) -> Result<Vec<u8>> {
    match result {
        Some(Ok(())) => read_mapped(buffer),
        Some(Err(e)) => Err(Error::Readback(e.to_string())),
        None => Err(Error::Readback("map callback dropped".into())),
    }
}

fn copy_to_staging(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    offset: u64,
    bytes: u64,
) -> Result<OwnedBuffer> {
    ctx.submit("batchnorm/readback", |encoder| {
        let staging = OwnedBuffer::new(
            ctx,
            "batchnorm/readback",
            bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        encoder.copy_buffer_to_buffer(buffer, offset, &staging.buffer, 0, bytes);
        Ok(staging)
    })
}

/// Reads `numel` f32 at byte `offset` of `buffer` back to the host (blocking).
pub(crate) fn read_buffer(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    offset: u64,
    numel: usize,
) -> Result<Vec<f32>> {
    if numel == 0 {
        ctx.check_alive()?;
        return Ok(Vec::new());
    }
    let bytes = read_bytes(ctx, buffer, offset, (numel * 4) as u64)?;
    Ok(bytemuck::cast_slice::<u8, f32>(&bytes[..numel * 4]).to_vec())
}

/// Reads `bytes` (a multiple of 4) at `offset` of `buffer` (blocking).
fn read_bytes(ctx: &GpuContext, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
    let staging = copy_to_staging(ctx, buffer, offset, bytes)?;
    let rx = start_map(&staging.buffer);
    ctx.synchronize()?;
    finish_map(pollster::block_on(rx.receive()), &staging.buffer)
}

fn read_mapped(buffer: &wgpu::Buffer) -> Result<Vec<u8>> {
    let view = buffer
        .slice(..)
        .get_mapped_range()
        .map_err(|e| Error::Readback(e.to_string()))?;
    let out = view.to_vec();
    drop(view);
    buffer.unmap();
    Ok(out)
}

/// Future that polls the device (non-blocking) until the receive completes.
struct PollUntil<F> {
    device: wgpu::Device,
    receive: std::pin::Pin<Box<F>>,
}

impl<F: std::future::Future> std::future::Future for PollUntil<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let _ = self.device.poll(wgpu::PollType::Poll);
        match self.receive.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(v),
            std::task::Poll::Pending => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }
    }
}
