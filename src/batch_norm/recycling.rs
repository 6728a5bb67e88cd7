//! Buffers a module recycles between calls while work recorded into the
//! application's encoders may still use them: the per-channel terms, and
//! the uniforms of recorded work.
//!
//! A forward writes its terms and its backward reads them, so a buffer
//! belongs to the [`Saved`](super::Saved) record of its forward until a
//! later forward replaces that record. Work the module submits itself has
//! been queued by then, and a later forward's writes land after it, so the
//! buffer is free at once. Work recorded into an application's
//! encoder (`encode_forward`, `encode_backward`) may run later than later
//! forwards: its buffer waits until every such encoder has finished on the
//! GPU or was dropped unsubmitted ([`EncoderUses`]), and only then serves
//! another forward. Recycling matters most where the terms are large (64
//! bytes per channel: 128 MiB for two million channels) and forwards are
//! recorded into encoders step after step.
//!
//! Recorded work also reads its own uniforms (shape, `eps`, momentum
//! factor): each call writes them into a buffer of [`RecordedUniforms`]
//! that no other call takes until the encoders that bound it are done, so
//! the module's own submissions, made in between on any thread, never see
//! them, nor they the module's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::Result;
use crate::gpu::buffer::{OwnedBuffer, UNIFORM_USAGE};
use crate::gpu::context::GpuContext;

/// Terms buffers a module keeps at most for later forwards (one whose
/// record a new forward replaced, and those still waiting for encoders);
/// older ones are let go (wgpu keeps a dropped buffer alive until the work
/// that uses it is done).
const MAX_TERMS: usize = 5;
/// Uniform buffers of recorded work a module keeps at most (the same).
const MAX_RECORDED_UNIFORMS: usize = 8;

/// The application's encoders that recorded work with one terms buffer and
/// have neither finished on the GPU nor been dropped.
#[derive(Clone, Debug, Default)]
pub(crate) struct EncoderUses(Arc<AtomicUsize>);

/// Held by an encoder's completion callback: one use, released when the
/// callback runs (the work finished) or is dropped with its encoder or
/// command buffer (the work never runs).
struct Use(Arc<AtomicUsize>);

impl Drop for Use {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EncoderUses {
    /// Counts `encoder` until its work has finished on the GPU or it is
    /// dropped unsubmitted.
    pub fn record(&self, encoder: &wgpu::CommandEncoder) {
        self.0.fetch_add(1, Ordering::AcqRel);
        let held = Use(self.0.clone());
        encoder.on_submitted_work_done(move || drop(held));
    }

    /// Whether no encoder that recorded work with the buffer may still run.
    pub fn idle(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// Buffers kept for reuse, each with the encoders that may still run work
/// with it: one serves again once they are all done.
pub(crate) struct Recycler<T> {
    kept: Vec<(T, EncoderUses)>,
    max: usize,
}

impl<T> Recycler<T> {
    fn new(max: usize) -> Self {
        Self {
            kept: Vec::new(),
            max,
        }
    }

    /// The most recently kept buffer that no work may still use and that
    /// `fits` (a steady loop reuses the same few, whose bind groups stay
    /// cached).
    fn take(&mut self, fits: impl Fn(&T) -> bool) -> Option<T> {
        let i = self
            .kept
            .iter()
            .rposition(|(t, uses)| uses.idle() && fits(t))?;
        Some(self.kept.remove(i).0)
    }

    /// Keeps `t` until `uses` are done; over the bound, lets go of an idle
    /// one (free anyway), else the oldest.
    fn keep(&mut self, t: T, uses: EncoderUses) {
        self.kept.push((t, uses));
        if self.kept.len() > self.max {
            let i = self.kept.iter().position(|(_, u)| u.idle()).unwrap_or(0);
            self.kept.remove(i);
        }
    }
}

/// Terms buffers no saved forward uses.
pub(crate) struct TermsPool(Recycler<Arc<OwnedBuffer>>);

impl Default for TermsPool {
    fn default() -> Self {
        Self(Recycler::new(MAX_TERMS))
    }
}

impl TermsPool {
    /// A buffer of at least `need` bytes that no work may still read or
    /// write (and no one else holds).
    pub fn take(&mut self, need: u64) -> Option<Arc<OwnedBuffer>> {
        self.0
            .take(|t| Arc::strong_count(t) == 1 && t.size() >= need)
    }

    /// Takes back the terms of a forward no saved record uses any more;
    /// `uses` counts the encoders that recorded work with them.
    pub fn give_back(&mut self, terms: Arc<OwnedBuffer>, uses: EncoderUses) {
        self.0.keep(terms, uses);
    }
}

/// Uniform buffers of work recorded into the application's encoders.
pub(crate) struct RecordedUniforms(Recycler<OwnedBuffer>);

impl Default for RecordedUniforms {
    fn default() -> Self {
        Self(Recycler::new(MAX_RECORDED_UNIFORMS))
    }
}

impl RecordedUniforms {
    /// A uniform buffer that holds `bytes` when `encoder` runs: one no
    /// encoder may still read (else a new one), written with
    /// `queue.write_buffer`, which lands before the next submission and so
    /// at the latest before the encoder's, and counted as `encoder`'s until
    /// its work is done or it is dropped.
    pub fn write(
        &mut self,
        ctx: &GpuContext,
        encoder: &wgpu::CommandEncoder,
        bytes: &[u8],
    ) -> Result<wgpu::Buffer> {
        let size = bytes.len() as u64;
        let buffer = match self.0.take(|b| b.size() >= size) {
            Some(b) => b,
            None => ctx.alloc("batchnorm/recorded-params", size, UNIFORM_USAGE)?,
        };
        ctx.queue().write_buffer(&buffer.buffer, 0, bytes);
        let uses = EncoderUses::default();
        uses.record(encoder);
        let bound = buffer.buffer.clone();
        self.0.keep(buffer, uses);
        Ok(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context, or `None` without an adapter (a failure under CI).
    fn context() -> Option<GpuContext> {
        match GpuContext::new() {
            Ok(ctx) => Some(ctx),
            Err(e) if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0") => {
                panic!("CI is set but no GPU adapter is available: {e}")
            }
            Err(_) => None,
        }
    }

    fn encoder(ctx: &GpuContext) -> wgpu::CommandEncoder {
        ctx.device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("test/terms-pool"),
            })
    }

    #[test]
    fn an_encoder_counts_until_its_work_is_done_or_it_is_dropped() {
        let Some(ctx) = context() else { return };
        let uses = EncoderUses::default();
        assert!(uses.idle());
        let dropped = encoder(&ctx);
        uses.record(&dropped);
        let submitted = encoder(&ctx);
        uses.record(&submitted);
        assert!(!uses.idle());
        drop(dropped);
        assert!(!uses.idle(), "one encoder is still unsubmitted");
        let unsubmitted = submitted.finish();
        assert!(!uses.idle(), "a command buffer keeps the use");
        ctx.queue().submit([unsubmitted]);
        ctx.synchronize().expect("sync");
        assert!(uses.idle(), "the work finished");
    }

    #[test]
    fn a_waiting_buffer_serves_again_only_once_its_encoders_are_done() {
        let Some(ctx) = context() else { return };
        let buffer = |label, size| {
            ctx.alloc(label, size, wgpu::BufferUsages::STORAGE)
                .map(Arc::new)
                .expect("alloc")
        };
        let mut pool = TermsPool::default();
        // Sizes tell the buffers apart: 256 bytes recorded, 320 submitted.
        let recorded = buffer("test/recorded", 256);
        let held = recorded.clone();
        let uses = EncoderUses::default();
        let enc = encoder(&ctx);
        uses.record(&enc);
        pool.give_back(recorded, uses);
        assert!(pool.take(256).is_none(), "its encoder may still run");
        // A buffer of a submitted forward is the spare at once.
        pool.give_back(buffer("test/submitted", 320), EncoderUses::default());
        let got = pool.take(256).expect("the spare");
        assert_eq!(got.size(), 320);
        drop(got);
        assert!(pool.take(256).is_none(), "the recorded one still waits");
        ctx.queue().submit([enc.finish()]);
        ctx.synchronize().expect("sync");
        assert!(pool.take(512).is_none(), "too small");
        assert!(pool.take(256).is_none(), "someone else holds it");
        drop(held);
        let got = pool.take(256).expect("done: it serves again");
        assert_eq!(got.size(), 256);
    }

    #[test]
    fn recorded_uniforms_are_each_calls_own_until_its_encoder_is_done() {
        let Some(ctx) = context() else { return };
        let mut pool = RecordedUniforms::default();
        let (e1, e2) = (encoder(&ctx), encoder(&ctx));
        let a = pool.write(&ctx, &e1, &[1u8; 256]).expect("first");
        let b = pool.write(&ctx, &e2, &[2u8; 256]).expect("second");
        assert_ne!(a, b, "the first encoder may still run");
        drop(e1);
        let c = pool.write(&ctx, &e2, &[3u8; 256]).expect("third");
        assert_eq!(
            a, c,
            "the first encoder was dropped: its buffer serves again"
        );
        ctx.queue().submit([e2.finish()]);
        ctx.synchronize().expect("sync");
        let again = pool
            .write(&ctx, &encoder(&ctx), &[6u8; 256])
            .expect("again");
        assert_eq!(again, c, "the most recently used free buffer first");
        let d = pool
            .write(&ctx, &encoder(&ctx), &[4u8; 512])
            .expect("larger");
        assert!(d != a && d != b, "too small: a new one");
        let mut kept = Vec::new();
        for _ in 0..2 * MAX_RECORDED_UNIFORMS {
            kept.push(encoder(&ctx));
            let e = kept.last().expect("pushed");
            pool.write(&ctx, e, &[5u8; 256]).expect("write");
        }
        assert_eq!(pool.0.kept.len(), MAX_RECORDED_UNIFORMS);
    }

    #[test]
    fn at_most_a_few_buffers_wait() {
        let Some(ctx) = context() else { return };
        let mut pool = TermsPool::default();
        let enc = encoder(&ctx);
        for _ in 0..2 * MAX_TERMS {
            let uses = EncoderUses::default();
            uses.record(&enc);
            let t = ctx
                .alloc("test/waiting", 64, wgpu::BufferUsages::STORAGE)
                .expect("alloc");
            pool.give_back(Arc::new(t), uses);
        }
        assert_eq!(pool.0.kept.len(), MAX_TERMS);
        drop(enc);
        assert!(pool.take(64).is_some(), "dropped unsubmitted: free");
    }
}
