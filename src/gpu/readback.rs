//! Reading GPU buffers back to the host: a copy into a mappable staging
//! buffer, then a map. The blocking form waits on the device; the async form
//! is woken by wgpu's map callback, which the context's poll thread
//! triggers, so the awaiting thread never spins.

use super::buffer::OwnedBuffer;
use super::context::GpuContext;
use super::scope::checked;
use crate::error::{Error, Result};

type MapResult = std::result::Result<(), wgpu::BufferAsyncError>;
type MapReceiver = futures_intrusive::channel::shared::OneshotReceiver<MapResult>;

/// Copies `bytes` (a multiple of 4) at `offset` of `buffer` into a new
/// staging buffer, in one submission.
fn copy_to_staging(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    offset: u64,
    bytes: u64,
) -> Result<OwnedBuffer> {
    let staging = ctx.alloc(
        "batchnorm/readback",
        bytes,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    )?;
    ctx.submit("batchnorm/readback", |encoder| {
        encoder.copy_buffer_to_buffer(buffer, offset, &staging.buffer, 0, bytes);
        Ok(())
    })?;
    Ok(staging)
}

/// Copies the bytes into a staging buffer and starts mapping it; the
/// receiver resolves when wgpu runs the map callback.
fn start(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    offset: u64,
    bytes: u64,
) -> Result<(OwnedBuffer, MapReceiver)> {
    let staging = copy_to_staging(ctx, buffer, offset, bytes)?;
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    checked(ctx.device(), || {
        staging
            .buffer
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| {
                tx.send(r).ok();
            })
    })
    .map_err(|e| ctx.lost_or_waited(e))?;
    Ok((staging, rx))
}

fn finish_map(result: Option<MapResult>, buffer: &wgpu::Buffer) -> Result<Vec<u8>> {
    match result {
        Some(Ok(())) => {
            let view = buffer
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Readback(e.to_string()))?;
            let out = view.to_vec();
            drop(view);
            buffer.unmap();
            Ok(out)
        }
        Some(Err(e)) => Err(Error::Readback(e.to_string())),
        None => Err(Error::Readback("map callback dropped".into())),
    }
}

/// Reads `bytes` (a multiple of 4) at `offset` of `buffer`, blocking until
/// the GPU is done.
pub(crate) fn read_bytes(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    offset: u64,
    bytes: u64,
) -> Result<Vec<u8>> {
    let (staging, rx) = start(ctx, buffer, offset, bytes)?;
    ctx.synchronize()?;
    finish_map(pollster::block_on(rx.receive()), &staging.buffer).map_err(|e| ctx.lost_or_waited(e))
}

/// [`read_bytes`] as a future that resolves once the GPU is done; the
/// waiting is done by the context's poll thread, and the future is woken
/// only by the map callback.
pub(crate) async fn read_bytes_async(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    offset: u64,
    bytes: u64,
) -> Result<Vec<u8>> {
    let (staging, rx) = start(ctx, buffer, offset, bytes)?;
    if !ctx.poller().request() {
        // No poll thread could be started: wait here instead.
        ctx.synchronize()?;
    }
    let result = rx.receive().await;
    ctx.check_lost()?;
    finish_map(result, &staging.buffer).map_err(|e| ctx.lost_or_waited(e))
}

/// Reads `count` f32 values at byte `offset` of `buffer` (blocking).
pub(crate) fn read_f32(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    offset: u64,
    count: usize,
) -> Result<Vec<f32>> {
    if count == 0 {
        ctx.check_alive()?;
        return Ok(Vec::new());
    }
    let bytes = read_bytes(ctx, buffer, offset, (count * 4) as u64)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}
