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
//! The result equals one device normalizing the whole batch. Backward of
//! such a forward needs gradient sums merged across devices as well and is
//! not provided yet (it returns an error).

use crate::batch_norm::{BatchNorm1d, Commit, Output, Saved};
use crate::error::{Error, Result};
use crate::semantics;
use crate::tensor::{OwnedBuffer, Tensor};

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
        let first = shards
            .first()
            .ok_or_else(|| Error::InvalidArgument("no shards to merge".into()))?;
        let c = first.mean.len();
        let mut acc = ShardMoments {
            count: 0,
            mean: vec![0.0; c],
            m2: vec![0.0; c],
        };
        for s in shards {
            if s.mean.len() != c || s.m2.len() != c {
                return Err(Error::InvalidArgument(format!(
                    "shards disagree on the channel count ({} vs {c})",
                    s.mean.len()
                )));
            }
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
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("batchnorm/shard-moments"),
            });
        ctx.scoped(|| {
            let x = x.padded(&mut encoder)?;
            self.encode_forward_passes(&mut encoder, &x, Output::Moments(&out.buffer), &plan, 0.0)?;
            ctx.queue().submit([encoder.finish()]);
            Ok(())
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
            let buf = ctx.scoped(|| {
                let b = OwnedBuffer::new(
                    &ctx,
                    "batchnorm/given-moments",
                    crate::tensor::padded_bytes(4 * c),
                    crate::tensor::TENSOR_USAGE,
                );
                ctx.queue()
                    .write_buffer(&b.buffer, 0, bytemuck::cast_slice(&given));
                Ok(b)
            })?;
            let mut encoder =
                ctx.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("batchnorm/forward-with-moments"),
                    });
            ctx.scoped(|| {
                let x = x.padded(&mut encoder)?;
                self.encode_forward_passes(
                    &mut encoder,
                    &x,
                    Output::Normalized {
                        y: &y,
                        given: Some(&buf.buffer),
                    },
                    &plan,
                    factor,
                )?;
                ctx.queue().submit([encoder.finish()]);
                Ok(())
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
}
