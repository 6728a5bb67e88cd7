//! Batch statistics across devices (what `torch.nn.SyncBatchNorm` does in
//! its forward).
//!
//! 1. Each device computes its shard's per-channel moments on the GPU:
//!    [`BatchNorm1d::shard_moments`] gives `(count, mean, M2)`.
//! 2. The shards merge on the host with Chan's formula
//!    ([`ShardMoments::merge`], f64): for `a` and `b`,
//!    `n = na + nb`, `d = mean_b - mean_a`, `mean = mean_a + d * nb / n`,
//!    `M2 = M2_a + M2_b + d² * na * nb / n`.
//! 3. Each device normalizes its shard with the merged statistics
//!    ([`BatchNorm1d::forward_with_moments`]); in training each module's
//!    running statistics are updated once, with the global unbiased variance
//!    `M2 / (n - 1)`.
//!
//! The result equals one device normalizing the whole batch. Backward
//! follows the same pattern (SyncBatchNorm's backward):
//!
//! 4. Each device computes its shard's per-channel gradient sums
//!    `sum(dy)` and `sum(dy * x_hat)` (x_hat from the merged statistics):
//!    [`BatchNorm1d::shard_grad_sums`].
//! 5. The sums add up across devices ([`ShardGradSums::merge`], f64).
//! 6. Each device computes its shard's
//!    `dx = weight * invstd * (dy - sum(dy) / n - x_hat * sum(dy * x_hat) / n)`
//!    with the global sums and count `n`, and every device gets the global
//!    `grad_weight = sum(dy * x_hat)` and `grad_bias = sum(dy)`
//!    ([`BatchNorm1d::backward_with_sums`]).
//!
//! A plain [`BatchNorm1d::backward`] after
//! [`BatchNorm1d::forward_with_moments`] is an error: it would use this
//! shard's sums only.

use crate::batch_norm::{BackwardMode, BatchNorm1d, Commit, Gradients, Output, Saved};
use crate::error::{Error, Result};
use crate::semantics;
use crate::tensor::{OwnedBuffer, Tensor};

/// A storage buffer holding `values` (per-channel inputs of the
/// `*_apply` kernels).
fn upload(ctx: &crate::GpuContext, label: &str, values: &[f32]) -> Result<OwnedBuffer> {
    ctx.scoped(|| {
        let b = OwnedBuffer::new(
            ctx,
            label,
            crate::tensor::padded_bytes(values.len()),
            crate::tensor::TENSOR_USAGE,
        );
        ctx.queue()
            .write_buffer(&b.buffer, 0, bytemuck::cast_slice(values));
        Ok(b)
    })
}

/// The channel count of `shards`, whose per-channel vectors (`columns`)
/// must all have it; an error for no shards.
fn shard_channels<T>(shards: &[T], columns: impl Fn(&T) -> [usize; 2]) -> Result<usize> {
    let first = shards
        .first()
        .ok_or_else(|| Error::InvalidArgument("no shards to merge".into()))?;
    let c = columns(first)[0];
    for s in shards {
        if let Some(&other) = columns(s).iter().find(|&&len| len != c) {
            return Err(Error::InvalidArgument(format!(
                "shards disagree on the channel count ({other} vs {c})"
            )));
        }
    }
    Ok(c)
}

/// Per-channel moments of one shard, or of several merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardMoments {
    /// Values per channel (`N * L` of the shard).
    pub count: u64,
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel sum of squared deviations from the mean.
    pub m2: Vec<f64>,
}

impl ShardMoments {
    /// Merges shards with Chan's formula, in the order given.
    pub fn merge(shards: &[ShardMoments]) -> Result<ShardMoments> {
        let c = shard_channels(shards, |s| [s.mean.len(), s.m2.len()])?;
        let mut acc = ShardMoments {
            count: 0,
            mean: vec![0.0; c],
            m2: vec![0.0; c],
        };
        for s in shards {
            if s.count == 0 {
                continue;
            }
            let n = (acc.count + s.count) as f64;
            let (na, nb) = (acc.count as f64, s.count as f64);
            for ch in 0..c {
                let d = s.mean[ch] - acc.mean[ch];
                acc.mean[ch] += d * nb / n;
                acc.m2[ch] += s.m2[ch] + d * d * na * nb / n;
            }
            acc.count += s.count;
        }
        Ok(acc)
    }

    /// Biased variance `M2 / count` of channel `ch`.
    pub fn variance(&self, ch: usize) -> f64 {
        self.m2[ch] / self.count as f64
    }
}

/// Per-channel gradient sums of one shard, or of several merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardGradSums {
    /// Values per channel (`N * L` of the shard).
    pub count: u64,
    /// Per-channel `sum(dy)`.
    pub sum_dy: Vec<f64>,
    /// Per-channel `sum(dy * x_hat)`.
    pub sum_dy_xhat: Vec<f64>,
}

impl ShardGradSums {
    /// Adds the shards' sums, in the order given.
    pub fn merge(shards: &[ShardGradSums]) -> Result<ShardGradSums> {
        let c = shard_channels(shards, |s| [s.sum_dy.len(), s.sum_dy_xhat.len()])?;
        let mut acc = ShardGradSums {
            count: 0,
            sum_dy: vec![0.0; c],
            sum_dy_xhat: vec![0.0; c],
        };
        for s in shards {
            acc.count += s.count;
            for ch in 0..c {
                acc.sum_dy[ch] += s.sum_dy[ch];
                acc.sum_dy_xhat[ch] += s.sum_dy_xhat[ch];
            }
        }
        Ok(acc)
    }
}

impl BatchNorm1d {
    /// This device's shard moments for `x` (`(N, C)` or `(N, C, L)` with
    /// `C = num_features`), reduced on the GPU and read back. Changes no
    /// module state.
    pub fn shard_moments(&mut self, x: &Tensor) -> Result<ShardMoments> {
        let plan = semantics::plan_forward_with(self.config(), true, x.shape(), Some(2))?;
        self.check_tensor(x)?;
        let c = plan.layout.c;
        let count = plan.layout.per_channel() as u64;
        if plan.empty {
            let none = ShardMoments {
                count: 0,
                mean: vec![0.0; c],
                m2: vec![0.0; c],
            };
            return Ok(none);
        }
        let ctx = self.context().clone();
        let out = ctx.scoped(|| {
            Ok(OwnedBuffer::new(
                &ctx,
                "batchnorm/shard-moments",
                crate::tensor::padded_bytes(4 * c),
                crate::tensor::TENSOR_USAGE,
            ))
        })?;
        ctx.submit("batchnorm/shard-moments", |encoder| {
            let x = x.padded(encoder)?;
            self.encode_forward_passes(encoder, &x, Output::Moments(&out.buffer), &plan, 0.0)
        })?;
        let raw = crate::tensor::read_buffer(&ctx, &out.buffer, 0, 4 * c)?;
        let mut m = ShardMoments {
            count,
            mean: vec![0.0; c],
            m2: vec![0.0; c],
        };
        for ch in 0..c {
            let q = &raw[4 * ch..4 * ch + 4];
            let scale = f64::from(q[3]);
            m.mean[ch] = f64::from(q[0]) + f64::from(q[1]) / scale;
            m.m2[ch] = f64::from(q[2]) / (scale * scale);
        }
        Ok(m)
    }

    /// Forward pass of this device's shard `x`, normalized with `global`
    /// (the merge of every shard's [`BatchNorm1d::shard_moments`], this
    /// one's included). In training with running statistics, the running
    /// buffers take the global mean and unbiased variance and
    /// `num_batches_tracked` advances by one. Needs batch statistics
    /// (training, or `track_running_stats = false`).
    pub fn forward_with_moments(&mut self, x: &Tensor, global: &ShardMoments) -> Result<Tensor> {
        let cfg = self.config().clone();
        let training = self.is_training();
        let plan = semantics::plan_forward_with(&cfg, training, x.shape(), Some(global.count))?;
        self.check_tensor(x)?;
        if !plan.batch_stats {
            return Err(Error::InvalidArgument(
                "eval mode with running statistics uses no batch statistics; call forward".into(),
            ));
        }
        if !plan.empty && global.mean.len() != plan.layout.c {
            return Err(Error::ChannelMismatch {
                name: "global moments",
                expected: plan.layout.c,
                actual: global.mean.len(),
            });
        }
        if !plan.empty && global.count < plan.layout.per_channel() as u64 {
            return Err(Error::InvalidArgument(
                "global moments cover fewer values than this shard".into(),
            ));
        }
        let y = Tensor::zeros_of(self.context(), x.shape(), x.dtype())?;
        let nbt = self.num_batches_tracked() + u64::from(plan.track_step);
        let ctx = self.context().clone();
        if !plan.empty {
            let c = plan.layout.c;
            let n = global.count as f64;
            // [mean high part, low part, invstd, unbiased var], from f64.
            let mut given = vec![0f32; 4 * c];
            for ch in 0..c {
                let mean = global.mean[ch];
                let hi = mean as f32;
                given[ch] = hi;
                given[c + ch] = (mean - f64::from(hi)) as f32;
                given[2 * c + ch] = (1.0 / (global.m2[ch] / n + cfg.eps).sqrt()) as f32;
                given[3 * c + ch] = (global.m2[ch] / (n - 1.0)) as f32;
            }
            let factor = semantics::momentum_factor(&cfg, nbt) as f32;
            let buf = upload(&ctx, "batchnorm/given-moments", &given)?;
            ctx.submit("batchnorm/forward-with-moments", |encoder| {
                let x = x.padded(encoder)?;
                self.encode_forward_passes(
                    encoder,
                    &x,
                    Output::Normalized {
                        y: &y,
                        given: Some(&buf.buffer),
                    },
                    &plan,
                    factor,
                )
            })?;
        }
        self.commit(Commit {
            num_batches_tracked: nbt,
            saved: Saved {
                input: x.clone(),
                layout: plan.layout,
                batch_stats: true,
                empty: plan.empty,
                sharded: true,
            },
        });
        Ok(y)
    }

    /// This shard's gradient sums for `grad_output` after a
    /// [`BatchNorm1d::forward_with_moments`] (so `x_hat` uses the merged
    /// statistics), reduced on the GPU and read back. Changes no module
    /// state.
    pub fn shard_grad_sums(&mut self, grad_output: &Tensor) -> Result<ShardGradSums> {
        let saved = self.saved().cloned().ok_or(Error::NoForward)?;
        let c = self.config().num_features;
        let count = saved.layout.per_channel() as u64;
        let ctx = self.context().clone();
        // Sums land in scratch tensors: grad_weight = sum(dy * x_hat),
        // grad_bias = sum(dy), even for a module without affine parameters.
        let (sum_dy_xhat, sum_dy) = (Tensor::zeros(&ctx, &[c])?, Tensor::zeros(&ctx, &[c])?);
        let mut grads = Gradients {
            grad_input: Tensor::zeros_of(&ctx, &[0], grad_output.dtype())?,
            grad_weight: Some(sum_dy_xhat.clone()),
            grad_bias: Some(sum_dy.clone()),
        };
        // encode_backward_with rejects a module whose last forward was not
        // forward_with_moments.
        ctx.submit("batchnorm/shard-grad-sums", |encoder| {
            self.encode_backward_with(encoder, grad_output, &mut grads, BackwardMode::SumsOnly)
        })?;
        let read = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.to_vec()?.into_iter().map(f64::from).collect())
        };
        Ok(ShardGradSums {
            count,
            sum_dy: read(&sum_dy)?,
            sum_dy_xhat: read(&sum_dy_xhat)?,
        })
    }

    /// Backward of this device's shard after
    /// [`BatchNorm1d::forward_with_moments`], with `global` the merge of
    /// every shard's [`BatchNorm1d::shard_grad_sums`] (this one's
    /// included): `grad_input` for this shard, and the global
    /// `grad_weight` and `grad_bias` (the same on every device).
    pub fn backward_with_sums(
        &mut self,
        grad_output: &Tensor,
        global: &ShardGradSums,
    ) -> Result<Gradients> {
        let saved = self.saved().cloned().ok_or(Error::NoForward)?;
        let c = self.config().num_features;
        if global.sum_dy.len() != c || global.sum_dy_xhat.len() != c {
            return Err(Error::ChannelMismatch {
                name: "global gradient sums",
                expected: c,
                actual: global.sum_dy.len(),
            });
        }
        if global.count < saved.layout.per_channel() as u64 || global.count == 0 {
            return Err(Error::InvalidArgument(
                "global gradient sums cover fewer values than this shard".into(),
            ));
        }
        let n = global.count as f64;
        let mut given = vec![0f32; 4 * c];
        for ch in 0..c {
            given[ch] = (global.sum_dy[ch] / n) as f32;
            given[c + ch] = (global.sum_dy_xhat[ch] / n) as f32;
            given[2 * c + ch] = global.sum_dy[ch] as f32;
            given[3 * c + ch] = global.sum_dy_xhat[ch] as f32;
        }
        let mut grads = self.alloc_gradients(grad_output)?;
        let ctx = self.context().clone();
        let buf = upload(&ctx, "batchnorm/given-grad-sums", &given)?;
        ctx.submit("batchnorm/backward-with-sums", |encoder| {
            self.encode_backward_with(
                encoder,
                grad_output,
                &mut grads,
                BackwardMode::Given(&buf.buffer),
            )
        })?;
        if saved.empty {
            // No values here, but the parameter gradients are global.
            ctx.scoped(|| {
                for (t, off) in [(&grads.grad_bias, 2 * c), (&grads.grad_weight, 3 * c)] {
                    if let Some(t) = t {
                        ctx.queue().write_buffer(
                            t.buffer(),
                            t.offset(),
                            bytemuck::cast_slice(&given[off..off + c]),
                        );
                    }
                }
                Ok(())
            })?;
        }
        Ok(grads)
    }
}
