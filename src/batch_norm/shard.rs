//! Batch statistics across devices: what `torch.nn.SyncBatchNorm` does,
//! as three steps per pass that a transport (threads, MPI, ...) connects.
//!
//! Forward:
//! 1. each replica reduces its shard on the GPU: [`BatchNorm::shard_moments`]
//!    gives per-channel `(count, mean, M2)`;
//! 2. the shards merge on the host with Chan's formula
//!    ([`ShardMoments::merge`], f64): for `a` and `b`, `n = na + nb`,
//!    `d = mean_b - mean_a`, `mean = mean_a + d * nb / n`,
//!    `M2 = M2_a + M2_b + d² * na * nb / n`;
//! 3. each replica normalizes its shard with the merged statistics
//!    ([`BatchNorm::forward_with_moments`]); in training, every replica's
//!    running statistics take the global mean and unbiased variance
//!    `M2 / (n - 1)` and `num_batches_tracked` advances, replicas with an
//!    empty shard included, so replicas never diverge.
//!
//! Backward:
//! 4. each replica reduces `sum(dy)` and `sum(dy * x_hat)` of its shard
//!    ([`BatchNorm::shard_grad_sums`]);
//! 5. the sums add up ([`ShardGradSums::merge`], f64);
//! 6. each replica computes its shard's
//!    `dx = weight * invstd * (dy - sum(dy) / n - x_hat * sum(dy * x_hat) / n)`
//!    with the global sums and count ([`BatchNorm::backward_with_sums`]).
//!    `grad_weight` and `grad_bias` are this replica's **local** sums, as in
//!    PyTorch: data-parallel training all-reduces parameter gradients
//!    itself, and summing them over replicas gives the full-batch ones.
//!
//! The structs are plain data (send them however you like); every call
//! checks them before using them, and a malformed one is an
//! [`Error::InvalidShard`] that changes nothing.

use super::backward::{BackwardMode, Gradients};
use super::forward::Commit;
use super::forward_pass::Output;
use super::shard_stats::invalid;
pub use super::shard_stats::{ShardGradSums, ShardMoments};
use super::workspace::Target;
use super::{BatchNorm, Saved, SavedData, SpatialRank};
use crate::error::{Error, Result};
use crate::gpu::buffer::{padded_bytes, TENSOR_USAGE};
use crate::gpu::readback::read_f32;
use crate::gpu::tensor::Tensor;
use crate::semantics;
use crate::types::DType;

/// This replica's gradient sums, kept for `backward_with_sums`, with the
/// `grad_output` they came from.
#[derive(Clone)]
pub(crate) struct LocalSums {
    sums: ShardGradSums,
    dy: Tensor,
    dy_mark: u64,
}

impl<R: SpatialRank> BatchNorm<R> {
    /// A storage buffer holding `values` (the `merged` input of the
    /// `*_apply` kernels).
    fn upload_merged(&self, label: &str, values: &[f32]) -> Result<wgpu::Buffer> {
        let b = self
            .ctx
            .alloc(label, padded_bytes(values.len(), DType::F32), TENSOR_USAGE)?;
        self.ctx.scoped(|| {
            self.ctx
                .queue()
                .write_buffer(&b.buffer, 0, bytemuck::cast_slice(values));
            Ok(())
        })?;
        Ok(b.buffer.clone())
    }

    /// This replica's shard moments for `x` (any shape the module accepts,
    /// one value per channel allowed), reduced on the GPU and read back.
    /// Changes no module state.
    pub fn shard_moments(&mut self, x: &Tensor) -> Result<ShardMoments> {
        let _span = crate::trace::span!("BatchNorm::shard_moments", numel = x.numel());
        let plan = semantics::plan_forward(
            &self.cfg,
            R::RANK,
            true,
            x.shape(),
            x.memory_format(),
            Some(2),
        )?;
        self.check_context("input", x)?;
        self.ctx.pipelines().supports(x.dtype())?;
        let c = plan.layout.c;
        if plan.empty {
            self.ctx.check_alive()?;
            // No values, but `N * L` of them per channel where C is 0.
            return Ok(ShardMoments {
                count: plan.layout.per_channel() as u64,
                ..ShardMoments::empty(c)
            });
        }
        let ctx = self.ctx.clone();
        let out = ctx.alloc(
            "batchnorm/shard-moments",
            padded_bytes(4 * c, DType::F32),
            TENSOR_USAGE,
        )?;
        ctx.submit("batchnorm/shard-moments", |encoder| {
            let x = x.padded(encoder)?;
            let output = Output::Moments(&out.buffer);
            self.record_passes(encoder, &x, output, &plan, 0.0, (Target::Submit, false))
        })?;
        let raw = read_f32(&ctx, &out.buffer, 0, 4 * c)?;
        let mut m = ShardMoments::empty(c);
        m.count = plan.layout.per_channel() as u64;
        let rows = m.mean.iter_mut().zip(m.m2.iter_mut());
        for ((mean, m2), q) in rows.zip(raw.chunks_exact(4)) {
            if let [shift, rel, scaled_m2, scale] = *q {
                let scale = f64::from(scale);
                *mean = f64::from(shift) + f64::from(rel) / scale;
                *m2 = f64::from(scaled_m2) / (scale * scale);
            }
        }
        Ok(m)
    }

    /// Forward pass of this replica's shard `x`, normalized with `global`
    /// (the merge of every replica's [`BatchNorm::shard_moments`], this
    /// one's included). In training with running statistics, the running
    /// buffers take the global mean and unbiased variance and
    /// `num_batches_tracked` advances by one, also when this shard is
    /// empty. Needs batch statistics (training, or
    /// `track_running_stats = false`).
    pub fn forward_with_moments(&mut self, x: &Tensor, global: &ShardMoments) -> Result<Tensor> {
        let _span = crate::trace::span!("BatchNorm::forward_with_moments", numel = x.numel());
        let plan = semantics::plan_forward(
            &self.cfg,
            R::RANK,
            self.training,
            x.shape(),
            x.memory_format(),
            Some(global.count),
        )?;
        self.check_context("input", x)?;
        self.ctx.pipelines().supports(x.dtype())?;
        if !plan.batch_stats {
            return Err(Error::NotAvailable {
                name: "batch statistics",
                reason: "eval mode with running statistics normalizes with the running \
                         statistics; call forward",
            });
        }
        let c = plan.layout.c;
        let gc = global.validate()?;
        if gc != c {
            return Err(Error::ChannelMismatch {
                name: "merged moments",
                expected: c,
                actual: gc,
            });
        }
        // Running statistics change only with values somewhere (an empty
        // batch everywhere, no rows or no channels, skips the checks, as a
        // plain empty forward does).
        let values = global.count > 0 && c > 0;
        if plan.track_step && values && c != self.cfg.num_features {
            return Err(Error::ChannelMismatch {
                name: "running_mean",
                expected: c,
                actual: self.cfg.num_features,
            });
        }
        if global.count < plan.layout.per_channel() as u64 {
            return Err(invalid(
                "the merged moments cover fewer values than this shard",
            ));
        }
        let y = Tensor::zeros_like(x)?;
        let nbt = semantics::next_batch_count(self.num_batches_tracked, plan.track_step)?;
        let factor = semantics::momentum_factor(&self.cfg, nbt) as f32;
        let run = !plan.empty || (plan.track_step && values);
        let ctx = self.ctx.clone();
        let terms = if run {
            Some(self.ws.take_terms(&ctx, c)?)
        } else {
            None
        };
        // What backward reads: the padded copy where the kernels need one,
        // or the module's own copy with `keep_input_copy`, as `forward`.
        let mut input = x.clone();
        if let Some(terms) = &terms {
            let n = global.count as f64;
            let eps = f64::from(self.cfg.eps_f32());
            // [mean high part | low part | invstd | unbiased var], from f64.
            let mut merged = vec![0f32; 4 * c];
            let (hi, rest) = merged.split_at_mut(c);
            let (lo, rest) = rest.split_at_mut(c);
            let (invstd, var) = rest.split_at_mut(c);
            let cols = hi.iter_mut().zip(lo).zip(invstd.iter_mut().zip(var));
            for (((h, l), (is, v)), (&mean, &m2)) in cols.zip(global.mean.iter().zip(&global.m2)) {
                *h = mean as f32;
                // An infinite mean (an infinite input) is its high part
                // alone: inf - inf would make the sum NaN.
                *l = if h.is_finite() {
                    (mean - f64::from(*h)) as f32
                } else {
                    0.0
                };
                *is = (1.0 / (m2 / n + eps).sqrt()) as f32;
                *v = (m2 / (n - 1.0)) as f32;
            }
            let buffer = self.upload_merged("batchnorm/merged-moments", &merged)?;
            input = ctx.submit("batchnorm/forward-with-moments", |encoder| {
                let x = self.saved_input(encoder, x)?;
                let output = if plan.empty {
                    Output::RunningUpdate {
                        merged: &buffer,
                        terms,
                    }
                } else {
                    Output::Normalized {
                        y: &y,
                        merged: Some(&buffer),
                        terms,
                        epilogue: (None, 0),
                    }
                };
                self.record_passes(encoder, &x, output, &plan, factor, (Target::Submit, false))?;
                Ok(x)
            })?;
        } else {
            self.ctx.check_alive()?;
        }
        let data = terms.filter(|_| !plan.empty).map(|terms| SavedData {
            terms,
            pending: false,
            encoders: Default::default(),
        });
        self.commit(Commit {
            num_batches_tracked: nbt,
            saved: Saved {
                input_mark: input.write_mark(),
                input,
                layout: plan.layout,
                batch_stats: true,
                sharded: true,
                data,
                local_sums: None,
                epilogue: None,
            },
            written: vec![y.clone()],
        });
        Ok(y)
    }
}

// The backward side.
impl<R: SpatialRank> BatchNorm<R> {
    /// This replica's gradient sums for `grad_output` after a
    /// [`BatchNorm::forward_with_moments`] (so `x_hat` uses the merged
    /// statistics), reduced on the GPU and read back. The module keeps them
    /// for the parameter gradients of [`BatchNorm::backward_with_sums`].
    pub fn shard_grad_sums(&mut self, grad_output: &Tensor) -> Result<ShardGradSums> {
        let _span = crate::trace::span!("BatchNorm::shard_grad_sums");
        let saved = self.saved.as_ref().ok_or(Error::NoForward)?;
        let c = self.grad_channels(saved);
        let count = saved.layout.per_channel() as u64;
        let ctx = self.ctx.clone();
        // Sums land in scratch tensors, even for a module without affine
        // parameters: grad_weight = sum(dy * x_hat), grad_bias = sum(dy).
        let sum_dy_xhat = Tensor::zeros(&ctx, &[c])?;
        let sum_dy = Tensor::zeros(&ctx, &[c])?;
        ctx.submit("batchnorm/shard-grad-sums", |encoder| {
            let params = (Some(&sum_dy_xhat), Some(&sum_dy));
            let mode = BackwardMode::SumsOnly;
            self.record_backward(encoder, grad_output, params, None, mode, Target::Submit)
        })?;
        let read = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.to_vec()?.into_iter().map(f64::from).collect())
        };
        let sums = ShardGradSums {
            count,
            sum_dy: read(&sum_dy)?,
            sum_dy_xhat: read(&sum_dy_xhat)?,
        };
        if let Some(saved) = self.saved.as_mut() {
            saved.local_sums = Some(LocalSums {
                sums: sums.clone(),
                dy: grad_output.clone(),
                dy_mark: grad_output.write_mark(),
            });
        }
        Ok(sums)
    }

    /// Backward of this replica's shard after
    /// [`BatchNorm::forward_with_moments`] and
    /// [`BatchNorm::shard_grad_sums`] of the same `grad_output`, with
    /// `global` the merge of every replica's sums: `grad_input` for this
    /// shard from the global sums, and `grad_weight` / `grad_bias` as this
    /// replica's **local** sums (PyTorch's `SyncBatchNorm` convention;
    /// their sum over replicas is the full-batch gradient).
    pub fn backward_with_sums(
        &mut self,
        grad_output: &Tensor,
        global: &ShardGradSums,
    ) -> Result<Gradients> {
        let _span = crate::trace::span!("BatchNorm::backward_with_sums");
        let saved = self.saved.clone().ok_or(Error::NoForward)?;
        if !saved.sharded {
            return Err(Error::WrongBackward(
                "gradient sums across devices need a forward_with_moments first",
            ));
        }
        let local = saved
            .local_sums
            .as_ref()
            .filter(|l| {
                l.dy.same_storage(grad_output)
                    && l.dy.offset() == grad_output.offset()
                    && l.dy.shape() == grad_output.shape()
                    && !grad_output.written_since(l.dy_mark)
            })
            .ok_or(Error::WrongBackward(
                "backward_with_sums needs shard_grad_sums of the same grad_output first",
            ))?
            .sums
            .clone();
        let c = self.grad_channels(&saved);
        let gc = global.validate()?;
        if gc != c {
            return Err(Error::ChannelMismatch {
                name: "merged gradient sums",
                expected: c,
                actual: gc,
            });
        }
        if global.count < local.count {
            return Err(invalid(
                "the merged gradient sums cover fewer values than this shard",
            ));
        }
        // No values anywhere: no means (and nothing reads them).
        let n = global.count.max(1) as f64;
        let mut merged = vec![0f32; 4 * c];
        let (mean_dy, rest) = merged.split_at_mut(c);
        let (mean_dyx, rest) = rest.split_at_mut(c);
        let (gb, gw) = rest.split_at_mut(c);
        let global_cols = global.sum_dy.iter().zip(&global.sum_dy_xhat);
        for ((a, b), (s, sx)) in mean_dy.iter_mut().zip(mean_dyx.iter_mut()).zip(global_cols) {
            *a = (s / n) as f32;
            *b = (sx / n) as f32;
        }
        let local_cols = local.sum_dy.iter().zip(&local.sum_dy_xhat);
        for ((b, w), (s, sx)) in gb.iter_mut().zip(gw.iter_mut()).zip(local_cols) {
            *b = *s as f32;
            *w = *sx as f32;
        }
        let grads = self.alloc_gradients(grad_output)?;
        let buffer = self.upload_merged("batchnorm/merged-grad-sums", &merged)?;
        let ctx = self.ctx.clone();
        let written = ctx.submit("batchnorm/backward-with-sums", |encoder| {
            let mode = BackwardMode::Merged {
                dx: &grads.grad_input,
                merged: &buffer,
            };
            let params = (grads.grad_weight.as_ref(), grads.grad_bias.as_ref());
            self.record_backward(encoder, grad_output, params, None, mode, Target::Submit)
        })?;
        written.iter().for_each(Tensor::record_write);
        Ok(grads)
    }
}
