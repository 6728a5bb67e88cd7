//! The forward's compute pass: `moments_partial* -> moments_finalize ->
//! normalize*` (training), the column kernels (few rows of many channels),
//! `normalize*` straight from the state (eval), `eval_prepare ->
//! normalize*` (eval recorded into an application's encoder), or
//! `moments_apply -> normalize*` (statistics merged across devices).

use std::sync::Arc;

use super::workspace::{Op, Prepared, Target};
use super::{BatchNorm, SpatialRank};
use crate::error::Result;
use crate::gpu::buffer::{BufferSlice, OwnedBuffer};
use crate::gpu::launch::{ChannelStep, ColumnStep, Elementwise, Partial, Recorder};
use crate::gpu::params::FLAG_FROM_STATE;
use crate::gpu::plan::{canonical, ColumnPass, ColumnRegs, ExecPlan, Variant};
use crate::gpu::tensor::Tensor;
use crate::semantics::ForwardPlan;

/// What a forward records.
pub(super) enum Output<'a> {
    /// Normalize into `y` with batch or running statistics, or with
    /// `merged` statistics from all devices; the per-channel terms go to
    /// `terms`.
    Normalized {
        y: &'a Tensor,
        merged: Option<&'a wgpu::Buffer>,
        terms: &'a Arc<OwnedBuffer>,
        /// The residual (padded) and the `EPILOGUE` bits.
        epilogue: (Option<&'a Tensor>, u32),
    },
    /// Only the running-statistics update from `merged` statistics (a
    /// shard with no values of its own); terms go to `terms`.
    RunningUpdate {
        merged: &'a wgpu::Buffer,
        terms: &'a Arc<OwnedBuffer>,
    },
    /// Export this shard's `(shift, (mean - shift) * scale, M2 * scale²,
    /// scale)` per channel.
    Moments(&'a wgpu::Buffer),
}

impl<R: SpatialRank> BatchNorm<R> {
    /// Records the forward's compute pass for `x` (already padded), for
    /// `target`; with `lazy` (an eval forward, see [`from_state`]) the
    /// normalize pass reads the state and no terms are written.
    pub(super) fn record_passes(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        output: Output<'_>,
        plan: &ForwardPlan,
        momentum: f32,
        (target, lazy): (Target, bool),
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        let layout = plan.layout;
        let own_stats = matches!(output, Output::Normalized { merged: None, .. });
        let from_state = own_stats && lazy;
        let mut flags = self.flags(plan.batch_stats, plan.track_step);
        if from_state {
            flags |= FLAG_FROM_STATE;
        }
        let ops = (Op::Forward, flags, momentum);
        let Prepared {
            exec,
            partials,
            uniforms,
        } = self.prepare_op(encoder, (&layout, x.dtype()), ops, target)?;
        let state = BufferSlice::whole(&self.state.buffer);
        let (c, variant) = (layout.c, exec.variant);
        // A first row longer than one binding: its channels' first values
        // gathered for the kernels that take the shift (batch statistics;
        // eval's come from the state).
        let heads = if exec.gathers_heads() && plan.batch_stats {
            Some(self.ws.heads(&ctx, c, x.dtype())?)
        } else {
            None
        };
        let head = match &heads {
            Some(h) => h.window(0, c),
            None => x.window(0, exec.head),
        };
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("batchnorm/forward"),
            timestamp_writes: None,
        });
        let mut rec = Recorder::new(
            &ctx,
            &mut pass,
            &mut self.ws.binds,
            &uniforms,
            x.dtype(),
            exec.thread_partials,
        );
        if own_stats && exec.forward_columns(plan.batch_stats) && !from_state {
            if let Output::Normalized {
                y, terms, epilogue, ..
            } = output
            {
                let pass = ColumnPass::Forward {
                    residual: epilogue.0.is_some(),
                };
                let kernel = exec.column_kernel(pass);
                // Eval reads x once anyway.
                let regs = if plan.batch_stats {
                    exec.column_regs(pass)
                } else {
                    ColumnRegs::Plain
                };
                let step = ColumnStep::Forward {
                    x: x.window(0, layout.numel()),
                    terms: BufferSlice::whole(&terms.buffer),
                    state,
                    out: y.window(0, layout.numel()),
                    residual: epilogue.0.map(|r| r.window(0, layout.numel())),
                    epilogue: epilogue.1,
                    kernel,
                    regs,
                };
                return rec.columns(step, exec.column_grid(kernel, regs));
            }
        }
        if heads.is_some() {
            for (i, ch) in exec.head_chunks() {
                rec.gather_heads(i + 1, x.window(ch.start, ch.count), head.clone(), c)?;
            }
        }
        let reduce = plan.batch_stats
            && matches!(
                output,
                Output::Moments(_) | Output::Normalized { merged: None, .. }
            );
        if reduce {
            for (i, ch) in exec.chunks.iter().enumerate() {
                let step = Partial::Moments {
                    x: x.window(ch.start, ch.count),
                    head: head.clone(),
                    partials: partials.clone(),
                };
                rec.partial(variant, i + 1, step, &ch.reduce)?;
            }
        }
        let (y, terms, epilogue) = match output {
            Output::Moments(moments) => {
                let moments_out = BufferSlice::whole(moments);
                let step = ChannelStep::MomentsExport {
                    partials,
                    head,
                    moments_out,
                    groups: exec.finalize_groups(),
                };
                return rec.channels(step, c);
            }
            Output::RunningUpdate { merged, terms } => {
                let terms = BufferSlice::whole(&terms.buffer);
                let merged = BufferSlice::whole(merged);
                let step = ChannelStep::MomentsApply {
                    terms,
                    state,
                    head,
                    merged,
                };
                return rec.channels(step, c);
            }
            Output::Normalized {
                y,
                merged,
                terms,
                epilogue,
            } => {
                if from_state {
                    // The normalize pass reads the state as its terms.
                    return Self::record_normalize(&mut rec, &exec, x, y, &state, epilogue);
                }
                let terms = BufferSlice::whole(&terms.buffer);
                let t = terms.clone();
                let step = match merged {
                    Some(m) => ChannelStep::MomentsApply {
                        terms: t,
                        state,
                        head,
                        merged: BufferSlice::whole(m),
                    },
                    None if plan.batch_stats => ChannelStep::MomentsFinalize {
                        terms: t,
                        partials,
                        state,
                        head,
                        groups: exec.finalize_groups(),
                    },
                    None => ChannelStep::EvalPrepare { terms: t, state },
                };
                rec.channels(step, c)?;
                (y, terms, epilogue)
            }
        };
        Self::record_normalize(&mut rec, &exec, x, y, &terms, epilogue)
    }

    /// The normalize pass over every chunk.
    fn record_normalize(
        rec: &mut Recorder<'_, '_>,
        exec: &ExecPlan,
        x: &Tensor,
        y: &Tensor,
        terms: &BufferSlice,
        (residual, bits): (Option<&Tensor>, u32),
    ) -> Result<()> {
        let variant = exec.variant;
        for (i, ch) in exec.chunks.iter().enumerate() {
            let step = Elementwise::Normalize {
                x: x.window(ch.start, ch.count),
                terms: terms.clone(),
                out: y.window(ch.start, ch.count),
                residual: residual.map(|r| r.window(ch.start, ch.count)),
                epilogue: bits,
            };
            rec.elementwise(variant, i + 1, step, (ch.count, ch.slab))?;
        }
        Ok(())
    }
}

/// Whether an eval forward normalises straight from the module's state
/// (`FLAG_FROM_STATE`: one dispatch, no terms written; the terms follow
/// only if something needs them, see `BatchNorm::settle_terms`). Work
/// recorded into the application's encoder writes its terms as it runs
/// (the state may change before the application submits it), and the
/// general layout's kernels read packed terms. The module also writes the
/// terms at once while a recorded training forward may still update the
/// state (`BatchNorm::state_writers`).
pub(super) fn from_state(plan: &ForwardPlan, target: Target) -> bool {
    !plan.batch_stats
        && target == Target::Submit
        && !Variant::of(&canonical(&plan.layout)).general_elementwise()
}
