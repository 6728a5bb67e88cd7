//! The forward pass: validation, then one compute pass
//! (`forward_pass.rs`), whose normalize step applies the fused epilogue,
//! if any; the state changes commit only once the work was accepted.

use super::epilogue::{Epilogue, SavedEpilogue, EPILOGUE_RELU};
use super::forward_pass::{from_state, Output};
use super::recycling::EncoderUses;
use super::workspace::Target;
use super::{BatchNorm, Saved, SavedData, SpatialRank};
use crate::error::{Error, Result};
use crate::gpu::params::{FLAG_AFFINE, FLAG_BATCH_STATS, FLAG_UPDATE_RUNNING};
use crate::gpu::tensor::Tensor;
use crate::semantics;

/// State changes of a forward, applied only once the GPU work was accepted.
pub(super) struct Commit {
    pub num_batches_tracked: u64,
    pub saved: Saved,
    /// Tensors the call wrote.
    pub written: Vec<Tensor>,
}

impl<R: SpatialRank> BatchNorm<R> {
    /// Forward pass: normalizes `x` into a new tensor of the same shape,
    /// dtype and memory format.
    ///
    /// In training mode (or without running statistics) it uses the batch
    /// mean and biased variance and, when tracking, updates the running
    /// statistics; in eval mode it uses the running statistics. One command
    /// submission. A rejected call changes nothing.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, Epilogue::none())
    }

    /// Forward pass writing into `out` (same shape, dtype and memory format
    /// as `x`, in another buffer: a dispatch may not bind one buffer both
    /// read-only and read-write, else [`Error::Aliasing`]), so steady-state
    /// loops allocate nothing. `out`'s buffer needs room for the data
    /// rounded up to 16 bytes.
    pub fn forward_into(&mut self, x: &Tensor, out: &Tensor) -> Result<()> {
        self.forward_fused_into(x, Epilogue::none(), out)
    }

    /// Forward pass with a fused epilogue, `y = act(bn(x) + residual)`, in
    /// the normalize pass (no extra pass over the tensor). Backward goes
    /// through the epilogue and returns `grad_residual`.
    ///
    /// ```
    /// # use wgpu_batchnorm::*;
    /// # fn main() -> Result<()> {
    /// # let Ok(ctx) = GpuContext::new() else { return Ok(()) };
    /// let mut bn = BatchNorm2d::new(&ctx, BatchNormConfig::new(2))?;
    /// let x = Tensor::from_slice(&ctx, &[1., 2., 3., 4., 5., 6., 7., 8.], &[2, 2, 1, 2])?;
    /// let r = Tensor::from_slice(&ctx, &[0.5; 8], &[2, 2, 1, 2])?;
    /// let y = bn.forward_fused(&x, Epilogue::relu().with_residual(&r))?;
    /// assert!(y.to_vec()?.iter().all(|&v| v >= 0.0));
    /// # Ok(()) }
    /// ```
    pub fn forward_fused(&mut self, x: &Tensor, epilogue: Epilogue<'_>) -> Result<Tensor> {
        let y = Tensor::zeros_like(x)?;
        self.forward_fused_into(x, epilogue, &y)?;
        Ok(y)
    }

    /// [`BatchNorm::forward_fused`] writing into `out`.
    pub fn forward_fused_into(
        &mut self,
        x: &Tensor,
        epilogue: Epilogue<'_>,
        out: &Tensor,
    ) -> Result<()> {
        let _span = crate::trace::span!("BatchNorm::forward", numel = x.numel());
        let ctx = self.ctx.clone();
        let commit = ctx.submit("batchnorm/forward", |encoder| {
            self.record_forward(encoder, x, epilogue, out, Target::Submit)
        })?;
        self.commit(commit);
        Ok(())
    }

    /// Records the forward pass into the caller's `encoder` without
    /// submitting it, so batch norm joins the app's own command stream.
    ///
    /// Everything the recorded work needs is validated first (an `Err`
    /// records nothing and changes nothing), and the work carries its own
    /// copy of its uniforms (shape, `eps`, momentum factor, flags: a buffer
    /// no other call writes until the encoder has run or was dropped), so
    /// later forwards and backwards made before the encoder is submitted,
    /// on this thread or while another thread submits it, do not change
    /// what it computes, and its per-channel terms serve another forward
    /// only once the encoder's work has finished on the GPU (or the
    /// encoder was dropped unsubmitted). It reads the module's weight, bias
    /// and running statistics, and the input, **when it runs**: setters,
    /// `load_state_dict`, `reset_*` and tensor refills made before you
    /// submit are queued writes that land first, so make them after
    /// submitting. The module's state (`num_batches_tracked`, what
    /// `backward` differentiates) advances at once; the running statistics
    /// change when the work runs, in submission order. Submit the encoder
    /// before reading results, and before any call that submits work of
    /// its own over them (`backward`, `backward_into`, the running
    /// statistics' getters): the queue runs submissions in order, so such
    /// work would read the per-channel terms before the recorded forward
    /// wrote them (record the backward with `encode_backward` into the
    /// same encoder instead). Should recording fail half-way for a reason
    /// validation cannot foresee (a pipeline the driver fails to compile,
    /// a lost device), part of the work may be in `encoder`: drop it
    /// rather than submit it.
    pub fn encode_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
    ) -> Result<Tensor> {
        let y = Tensor::zeros_like(x)?;
        self.encode_forward_fused_into(encoder, x, Epilogue::none(), &y)?;
        Ok(y)
    }

    /// [`BatchNorm::encode_forward`] writing into `out`.
    pub fn encode_forward_into(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        self.encode_forward_fused_into(encoder, x, Epilogue::none(), out)
    }

    /// [`BatchNorm::encode_forward`] with a fused epilogue, writing into `out`.
    pub fn encode_forward_fused_into(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        epilogue: Epilogue<'_>,
        out: &Tensor,
    ) -> Result<()> {
        let _span = crate::trace::span!("BatchNorm::encode_forward", numel = x.numel());
        let ctx = self.ctx.clone();
        let commit =
            ctx.scoped(|| self.record_forward(encoder, x, epilogue, out, Target::Encoder))?;
        self.commit(commit);
        Ok(())
    }

    pub(super) fn commit(&mut self, mut c: Commit) {
        self.num_batches_tracked = c.num_batches_tracked;
        for t in &c.written {
            t.record_write();
        }
        // The saved output is valid as written by this very call.
        if let Some((y, mark)) = c.saved.epilogue.as_mut().and_then(|e| e.output.as_mut()) {
            *mark = y.write_mark();
        }
        self.commit_saved(c.saved);
    }

    /// The input tensor a forward saves for backward: `x` itself (or its
    /// padded copy), or the module's own copy with `keep_input_copy`.
    pub(super) fn saved_input(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
    ) -> Result<Tensor> {
        if !self.keep_input_copy || x.numel() == 0 {
            return x.padded(encoder);
        }
        x.require_usage("input (keep_input_copy)", wgpu::BufferUsages::COPY_SRC)?;
        let copy = Tensor::alloc(
            &self.ctx,
            x.shape(),
            x.dtype(),
            x.memory_format(),
            "batchnorm/saved-input",
        )?;
        encoder.copy_buffer_to_buffer(x.buffer(), x.offset(), copy.buffer(), 0, x.copy_bytes()?);
        Ok(copy)
    }

    fn record_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        epilogue: Epilogue<'_>,
        out: &Tensor,
        target: Target,
    ) -> Result<Commit> {
        let plan = semantics::plan_forward(
            &self.cfg,
            R::RANK,
            self.training,
            x.shape(),
            x.memory_format(),
            None,
        )?;
        self.check_context("input", x)?;
        self.check_output("forward output", out, x)?;
        if x.shares_buffer(out) {
            return Err(Error::Aliasing {
                what: "forward output",
            });
        }
        if let Some(r) = epilogue.residual {
            self.check_like("residual", r, x)?;
            if r.shares_buffer(out) {
                return Err(Error::Aliasing {
                    what: "forward output (it shares a buffer with the residual)",
                });
            }
        }
        self.ctx.pipelines().supports(x.dtype())?;
        // Every check before the first copy is recorded into `encoder`
        // (the residual's padded copy comes after the input's), the launch
        // plan's too.
        let nbt = semantics::next_batch_count(self.num_batches_tracked, plan.track_step)?;
        if !plan.empty {
            self.plan_op(&plan.layout, x.dtype())?;
        }
        if let Some(r) = epilogue.residual {
            r.padding_copy()?;
        }
        let input = self.saved_input(encoder, x)?;
        let residual = epilogue.residual.map(|r| r.padded(encoder)).transpose()?;
        let data = if plan.empty {
            None
        } else {
            let terms = self.ws.take_terms(&self.ctx, plan.layout.c)?;
            let factor = semantics::momentum_factor(&self.cfg, nbt) as f32;
            let output = Output::Normalized {
                y: out,
                merged: None,
                terms: &terms,
                epilogue: (residual.as_ref(), epilogue.bits()),
            };
            // Decided once: the passes and the saved record must agree.
            let lazy = from_state(&plan, target) && self.state_writers.idle();
            if target == Target::Encoder && plan.track_step {
                self.state_writers.record(encoder);
            }
            self.record_passes(encoder, &input, output, &plan, factor, (target, lazy))?;
            let encoders = EncoderUses::default();
            if target == Target::Encoder {
                encoders.record(encoder);
            }
            Some(SavedData {
                terms,
                pending: lazy,
                encoders,
            })
        };
        Ok(Commit {
            num_batches_tracked: nbt,
            saved: Saved {
                input_mark: input.write_mark(),
                input,
                layout: plan.layout,
                batch_stats: plan.batch_stats,
                sharded: false,
                data,
                local_sums: None,
                epilogue: (epilogue.bits() != 0).then(|| SavedEpilogue {
                    bits: epilogue.bits(),
                    output: (epilogue.bits() & EPILOGUE_RELU != 0).then(|| (out.clone(), 0)),
                }),
            },
            written: vec![out.clone()],
        })
    }

    pub(super) fn flags(&self, batch_stats: bool, update_running: bool) -> u32 {
        let mut flags = 0;
        if update_running {
            flags |= FLAG_UPDATE_RUNNING;
        }
        if self.cfg.affine {
            flags |= FLAG_AFFINE;
        }
        if batch_stats {
            flags |= FLAG_BATCH_STATS;
        }
        flags
    }
}
