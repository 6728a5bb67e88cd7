//! The backward pass of the last successful forward: one compute pass of
//! `grads_partial* -> grads_finalize -> grads_rescue* -> grads_rescue_finish
//! -> grad_input*` (the rescue: sums that overflowed f32, redone carefully),
//! the column kernels (`backward_columns* -> backward_columns_rescue`), or
//! `grads_apply -> grad_input*` with gradient sums merged across devices
//! (`backward_pass.rs`).

use super::workspace::Target;
use super::{BatchNorm, Saved, SpatialRank};
use crate::error::{Error, Result};
use crate::gpu::buffer::BufferSlice;
use crate::gpu::tensor::Tensor;
use crate::types::{DType, MemoryFormat};

/// Gradients returned by [`BatchNorm::backward`].
#[derive(Debug, Clone)]
pub struct Gradients {
    /// d loss / d input, same shape, dtype and memory format as the
    /// forward's input.
    pub grad_input: Tensor,
    /// d loss / d weight, `[C]` f32; `Some` iff the module is affine.
    pub grad_weight: Option<Tensor>,
    /// d loss / d bias, `[C]` f32; `Some` iff the module is affine.
    pub grad_bias: Option<Tensor>,
    /// d loss / d residual, like the input; `Some` iff the forward was
    /// fused with a residual ([`BatchNorm::forward_fused`]).
    pub grad_residual: Option<Tensor>,
}

/// What a backward pass computes.
#[derive(Clone, Copy)]
pub(super) enum BackwardMode<'a> {
    /// Gradient sums of this batch, then grad_input into `dx`.
    Full { dx: &'a Tensor },
    /// This shard's gradient sums only (into grad_weight, grad_bias).
    SumsOnly,
    /// Sums merged across devices, `[mean(dy) | mean(dy * x_hat) |
    /// grad_bias | grad_weight]` (C values each), then grad_input into `dx`.
    Merged {
        dx: &'a Tensor,
        merged: &'a wgpu::Buffer,
    },
}

impl<'a> BackwardMode<'a> {
    pub(super) fn dx(self) -> Option<&'a Tensor> {
        match self {
            BackwardMode::Full { dx } | BackwardMode::Merged { dx, .. } => Some(dx),
            BackwardMode::SumsOnly => None,
        }
    }
}

impl<R: SpatialRank> BatchNorm<R> {
    /// Backward pass: gradients of the most recent successful forward for
    /// `grad_output` (same shape, dtype and memory format as that forward's
    /// input). One submission.
    ///
    /// Training (batch statistics):
    /// `dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))`;
    /// eval with running statistics: `dx = dy * weight * invstd(running_var)`.
    /// `grad_weight = sum(dy * x_hat)`, `grad_bias = sum(dy)` per channel.
    ///
    /// Backward reads the forward's input when it runs (no copy is kept
    /// unless [`BatchNorm::keep_input_copy`] is on). If any of its bytes
    /// were written through the library since the forward (through any
    /// tensor on its buffer: clones, views, another
    /// [`Tensor::from_buffer`] of it), this returns
    /// [`Error::ModifiedSinceForward`], as PyTorch raises for a tensor
    /// modified in place.
    pub fn backward(&mut self, grad_output: &Tensor) -> Result<Gradients> {
        let mut g = self.alloc_gradients(grad_output)?;
        self.backward_into(grad_output, &mut g)?;
        Ok(g)
    }

    /// Backward pass writing into `grads` (typically returned by an earlier
    /// [`BatchNorm::backward`] of the same shape), allocating nothing.
    /// `grad_weight` and `grad_bias` are `Some` exactly for an affine
    /// module, and `grad_residual` exactly after a forward that added a
    /// residual (else [`Error::NotAvailable`]). An output may share no
    /// buffer with `grad_output` or the forward's input, and no bytes with
    /// another output ([`Error::Aliasing`]; `grad_residual` no buffer with
    /// the other gradients).
    pub fn backward_into(&mut self, grad_output: &Tensor, grads: &mut Gradients) -> Result<()> {
        let _span = crate::trace::span!("BatchNorm::backward", numel = grad_output.numel());
        let ctx = self.ctx.clone();
        let written = ctx.submit("batchnorm/backward", |encoder| {
            let mode = BackwardMode::Full {
                dx: &grads.grad_input,
            };
            let params = (grads.grad_weight.as_ref(), grads.grad_bias.as_ref());
            let residual = grads.grad_residual.as_ref();
            self.record_backward(encoder, grad_output, params, residual, mode, Target::Submit)
        })?;
        written.iter().for_each(Tensor::record_write);
        Ok(())
    }

    /// Records the backward pass into the caller's `encoder` without
    /// submitting (see [`BatchNorm::encode_forward`] for the contract).
    pub fn encode_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        grad_output: &Tensor,
    ) -> Result<Gradients> {
        let mut g = self.alloc_gradients(grad_output)?;
        self.encode_backward_into(encoder, grad_output, &mut g)?;
        Ok(g)
    }

    /// [`BatchNorm::encode_backward`] writing into `grads`.
    pub fn encode_backward_into(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        grad_output: &Tensor,
        grads: &mut Gradients,
    ) -> Result<()> {
        let _span = crate::trace::span!("BatchNorm::encode_backward", numel = grad_output.numel());
        // Counted first: work recorded before a failure half-way reads and
        // writes the terms too.
        if let Some(data) = self.saved.as_ref().and_then(|s| s.data.as_ref()) {
            data.encoders.record(encoder);
        }
        let ctx = self.ctx.clone();
        let written = ctx.scoped(|| {
            let mode = BackwardMode::Full {
                dx: &grads.grad_input,
            };
            let params = (grads.grad_weight.as_ref(), grads.grad_bias.as_ref());
            let residual = grads.grad_residual.as_ref();
            self.record_backward(
                encoder,
                grad_output,
                params,
                residual,
                mode,
                Target::Encoder,
            )
        })?;
        written.iter().for_each(Tensor::record_write);
        Ok(())
    }
}

// Validation and recording, shared by the backward entry points.
impl<R: SpatialRank> BatchNorm<R> {
    /// Channels of the parameter gradients: the input's, or
    /// `num_features` for an empty input of an affine module (PyTorch's
    /// zero gradients have the parameters' shape).
    pub(super) fn grad_channels(&self, saved: &Saved) -> usize {
        if saved.data.is_none() && self.cfg.affine {
            self.cfg.num_features
        } else {
            saved.layout.c
        }
    }

    /// Gradient tensors for the last forward (the backward's output).
    pub(super) fn alloc_gradients(&self, grad_output: &Tensor) -> Result<Gradients> {
        let saved = self.saved.as_ref().ok_or(Error::NoForward)?;
        self.check_context("grad_output", grad_output)?;
        let gc = self.grad_channels(saved);
        let param = || Tensor::zeros(&self.ctx, &[gc]);
        Ok(Gradients {
            grad_input: Tensor::zeros_like(&saved.input)?,
            grad_weight: self.cfg.affine.then(param).transpose()?,
            grad_bias: self.cfg.affine.then(param).transpose()?,
            grad_residual: saved
                .epilogue
                .as_ref()
                .filter(|e| e.has_residual())
                .map(|_| Tensor::zeros_like(&saved.input))
                .transpose()?,
        })
    }

    /// Checks `grad_output` against the saved forward, and that the saved
    /// input is unchanged.
    fn check_grad_output(&self, saved: &Saved, dy: &Tensor) -> Result<()> {
        self.check_context("grad_output", dy)?;
        let x = &saved.input;
        if dy.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                what: "grad_output",
                expected: x.shape().to_vec(),
                actual: dy.shape().to_vec(),
            });
        }
        if dy.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch {
                what: "grad_output",
                expected: x.dtype(),
                actual: dy.dtype(),
            });
        }
        let format = |t: &Tensor| match t.shape().len() {
            0..=2 => MemoryFormat::ChannelsFirst,
            _ => t.memory_format(),
        };
        if format(dy) != format(x) {
            return Err(Error::FormatMismatch {
                what: "grad_output",
                expected: x.memory_format(),
                actual: dy.memory_format(),
            });
        }
        if x.written_since(saved.input_mark) {
            return Err(Error::ModifiedSinceForward { what: "input" });
        }
        Ok(())
    }

    /// A parameter-gradient output: `[gc]` f32, or the module's scratch
    /// where the module has no such parameter (the sums are still needed).
    fn param_grad(&mut self, t: Option<&Tensor>, name: &'static str, gc: usize) -> Result<Tensor> {
        match t {
            Some(t) => {
                self.check_context(name, t)?;
                if t.shape() != [gc] {
                    return Err(Error::ShapeMismatch {
                        what: name,
                        expected: vec![gc],
                        actual: t.shape().to_vec(),
                    });
                }
                if t.dtype() != DType::F32 {
                    return Err(Error::DTypeMismatch {
                        what: name,
                        expected: DType::F32,
                        actual: t.dtype(),
                    });
                }
                t.require_usage(
                    name,
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                )?;
                Ok(t.clone())
            }
            None => self.ws.grad_scratch(&self.ctx, name, gc),
        }
    }

    /// Validates everything, then records the backward in `mode`; returns
    /// the tensors it writes.
    pub(super) fn record_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        grad_output: &Tensor,
        (grad_weight, grad_bias): (Option<&Tensor>, Option<&Tensor>),
        grad_residual: Option<&Tensor>,
        mode: BackwardMode<'_>,
        target: Target,
    ) -> Result<Vec<Tensor>> {
        self.settle_terms()?;
        let saved = self.saved.clone().ok_or(Error::NoForward)?;
        match (saved.sharded, &mode) {
            (true, BackwardMode::Full { .. }) => {
                return Err(Error::WrongBackward(
                    "a forward with cross-device statistics needs gradient sums merged \
                     across devices: use shard_grad_sums and backward_with_sums",
                ))
            }
            (false, BackwardMode::SumsOnly | BackwardMode::Merged { .. }) => {
                return Err(Error::WrongBackward(
                    "gradient sums across devices need a forward_with_moments first",
                ))
            }
            _ => {}
        }
        self.check_grad_output(&saved, grad_output)?;
        let sums_only = matches!(mode, BackwardMode::SumsOnly);
        if let Some(dx) = mode.dx() {
            self.check_output("grad_input", dx, &saved.input)?;
            if dx.shares_buffer(grad_output) || dx.shares_buffer(&saved.input) {
                return Err(Error::Aliasing { what: "grad_input" });
            }
        }
        let gc = self.grad_channels(&saved);
        // A shard's sums always go to the given tensors, affine or not.
        let want = self.cfg.affine || sums_only;
        let (gw, gb) = match (grad_weight, grad_bias) {
            (Some(w), Some(b)) if want => (
                self.param_grad(Some(w), "grad_weight", gc)?,
                self.param_grad(Some(b), "grad_bias", gc)?,
            ),
            (None, None) if !want => (
                self.param_grad(None, "grad_weight", gc)?,
                self.param_grad(None, "grad_bias", gc)?,
            ),
            // The first of the two that is missing where both are wanted,
            // or given where neither is.
            (w, _) => {
                return Err(Error::NotAvailable {
                    name: if w.is_some() == want {
                        "grad_bias"
                    } else {
                        "grad_weight"
                    },
                    reason: if want {
                        "an affine module's backward writes both parameter gradients"
                    } else {
                        "a module without affine parameters has no parameter gradients"
                    },
                })
            }
        };
        let outputs = [&gw, &gb];
        for (i, t) in outputs.iter().enumerate() {
            let clash = t.shares_buffer(grad_output)
                || t.shares_buffer(&saved.input)
                || mode.dx().is_some_and(|dx| t.overlaps(dx))
                || outputs.iter().skip(i + 1).any(|o| t.overlaps(o));
            if clash {
                return Err(Error::Aliasing {
                    what: "a parameter gradient",
                });
            }
        }
        // grad_residual holds the output gradient through the epilogue
        // until grad_input has read it, in the dispatches that write the
        // other gradients: no other gradient may share its buffer.
        if let Some(gr) = grad_residual {
            let clash = mode.dx().is_some_and(|dx| gr.shares_buffer(dx))
                || outputs.iter().any(|o| gr.shares_buffer(o));
            if clash {
                return Err(Error::Aliasing {
                    what: "grad_residual",
                });
            }
        }
        let fused = self.fused_backward(&saved, grad_output, grad_residual)?;
        self.ctx.pipelines().supports(grad_output.dtype())?;
        let dy = grad_output.padded(encoder)?;
        let mut written: Vec<Tensor> = grad_residual.into_iter().cloned().collect();
        if want {
            written.extend([gw.clone(), gb.clone()]);
        }
        if let Some(dx) = mode.dx() {
            written.push(dx.clone());
        }
        match &saved.data {
            None => {
                // No values: zero parameter gradients, empty grad_input.
                for t in [&gw, &gb] {
                    encoder.clear_buffer(t.buffer(), t.offset(), Some((gc as u64) * 4));
                }
            }
            Some(data) => {
                let terms = BufferSlice::whole(&data.terms.buffer);
                let grads = (&gw, &gb);
                self.record_backward_pass(encoder, &saved, &dy, fused, grads, terms, mode, target)?;
            }
        }
        Ok(written)
    }
}
