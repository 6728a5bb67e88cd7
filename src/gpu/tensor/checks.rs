//! What the library's calls check about a [`Tensor`] (the writes made
//! over it, buffers and bytes shared with other tensors, usages) and how
//! they bind it.

use std::ops::Range;
use std::sync::Arc;

use super::Tensor;
use crate::error::{Error, Result};
use crate::gpu::buffer::{padded_bytes, BufferSlice};

impl Tensor {
    /// A mark of the library's writes to this tensor's buffer so far, for
    /// [`Tensor::written_since`].
    pub(crate) fn write_mark(&self) -> u64 {
        self.storage.mark()
    }

    /// Records a write by the library (an empty tensor has nothing to
    /// write): the tensor's bytes, rounded up to the whole vec4s the
    /// kernels write.
    pub(crate) fn record_write(&self) {
        if self.numel() > 0 {
            self.storage.record_write(self.written_bytes());
        }
    }

    /// Whether the library wrote over any of this tensor's bytes (through
    /// any tensor on its buffer) since `mark`.
    pub(crate) fn written_since(&self, mark: u64) -> bool {
        let bytes = self.offset..self.offset + (self.numel() * self.dtype.size()) as u64;
        self.numel() > 0 && self.storage.written_since(mark, &bytes)
    }

    /// The bytes the kernels write for this tensor.
    fn written_bytes(&self) -> Range<u64> {
        self.offset..self.offset + padded_bytes(self.numel(), self.dtype)
    }

    /// Whether `other` is this very storage (same buffer allocation).
    pub(crate) fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// Whether the two tensors lie in one buffer: an output may not share
    /// a buffer with an input of the same call even at other bytes, as a
    /// dispatch may not bind one buffer both read-only and read-write
    /// (wgpu rejects it, for recorded work only when the encoder is
    /// finished).
    pub(crate) fn shares_buffer(&self, other: &Tensor) -> bool {
        self.buffer() == other.buffer() && self.numel() > 0 && other.numel() > 0
    }

    /// Whether two outputs' bytes overlap in one buffer.
    pub(crate) fn overlaps(&self, other: &Tensor) -> bool {
        // As the kernels write them: whole vec4s (on an adapter whose
        // offset alignment is under 16 bytes, a tensor may start in the
        // padding another output's last vec4 writes).
        let (a, b) = (self.written_bytes(), other.written_bytes());
        self.buffer() == other.buffer()
            && a.start < b.end
            && b.start < a.end
            && self.numel() > 0
            && other.numel() > 0
    }

    /// Whether the tensor was made by [`Tensor::from_buffer`]: the bytes
    /// next to it may be the application's data (or, in a library
    /// tensor's buffer wrapped again, that tensor's).
    pub(crate) fn is_wrapped(&self) -> bool {
        self.wrapped
    }

    /// `Err(BufferUsage)` unless the buffer has `usage`.
    pub(crate) fn require_usage(
        &self,
        what: &'static str,
        usage: wgpu::BufferUsages,
    ) -> Result<()> {
        let missing = usage - self.buffer().usage();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::BufferUsage { what, missing })
        }
    }

    /// The binding of elements `[start, start + count)`, rounded up to a
    /// whole `vec4` where the buffer has room.
    pub(crate) fn window(&self, start: usize, count: usize) -> BufferSlice {
        let offset = self.offset + (start * self.dtype.size()) as u64;
        let avail = self.buffer().size().saturating_sub(offset);
        let size = padded_bytes(count, self.dtype).min(avail).max(4);
        BufferSlice {
            buffer: self.buffer().clone(),
            offset,
            size,
            owner: Some(Arc::downgrade(&self.storage)),
        }
    }

    /// The binding of the whole tensor.
    pub(crate) fn binding(&self) -> BufferSlice {
        self.window(0, self.numel())
    }

    /// Whether the buffer has room for whole `vec4` reads and writes past
    /// the end.
    pub(crate) fn is_padded(&self) -> bool {
        self.buffer().size().saturating_sub(self.offset) >= padded_bytes(self.numel(), self.dtype)
    }

    /// This tensor when its buffer has room for whole `vec4` reads, else a
    /// padded copy recorded into `encoder` (which needs `COPY_SRC`, checked
    /// before anything is recorded).
    pub(crate) fn padded(&self, encoder: &mut wgpu::CommandEncoder) -> Result<Tensor> {
        let Some(bytes) = self.padding_copy()? else {
            return Ok(self.clone());
        };
        let copy = Tensor::zeros_with(&self.ctx, &self.shape, self.dtype, self.format)?;
        encoder.copy_buffer_to_buffer(self.buffer(), self.offset, copy.buffer(), 0, bytes);
        Ok(copy)
    }

    /// What [`Tensor::padded`] checks before it records anything: `None`
    /// where the tensor serves as it is, else the bytes its copy takes
    /// (the buffer must allow `COPY_SRC`). Callers that record other work
    /// before the copy check with this first.
    pub(crate) fn padding_copy(&self) -> Result<Option<u64>> {
        if self.is_padded() || self.numel() == 0 {
            return Ok(None);
        }
        self.require_usage(
            "a tensor without 16 bytes of padding",
            wgpu::BufferUsages::COPY_SRC,
        )?;
        self.copy_bytes().map(Some)
    }

    /// Bytes to copy for the data: a multiple of 4, as wgpu requires.
    pub(crate) fn copy_bytes(&self) -> Result<u64> {
        let bytes = (self.numel() * self.dtype.size()) as u64;
        let rounded = bytes.next_multiple_of(4);
        let have = self.buffer().size().saturating_sub(self.offset);
        if rounded > have {
            // An f16 tensor with an odd element count in a buffer that
            // ends right after it.
            return Err(Error::LengthMismatch {
                name: "buffer bytes after the tensor's offset (a multiple of 4)",
                expected: usize::try_from(rounded).unwrap_or(usize::MAX),
                actual: usize::try_from(have).unwrap_or(usize::MAX),
            });
        }
        Ok(rounded)
    }
}
