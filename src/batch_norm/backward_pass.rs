//! The backward compute pass: through the fused epilogue (if any), then
//! `grads_partial* -> grads_finalize -> grads_rescue* -> grads_rescue_finish
//! -> grad_input*` (the rescue: sums that overflowed f32, redone carefully),
//! `backward_columns* -> backward_columns_rescue` (the column strategies),
//! `grads_columns -> grads_rescue -> grads_rescue_finish` (one channel per
//! thread, the sums alone), or `grads_apply -> grad_input*` with gradient
//! sums merged across devices. Each rescue kernel returns at once unless the kernel that
//! summed raised its flag.

use super::backward::BackwardMode;
use super::epilogue::Fused;
use super::workspace::{Op, Prepared, Target};
use super::{BatchNorm, Saved, SpatialRank};
use crate::error::Result;
use crate::gpu::buffer::BufferSlice;
use crate::gpu::launch::{
    ChannelStep, ColumnGrads, ColumnStep, Elementwise, GradsRescue, Partial, Recorder,
};
use crate::gpu::plan::{
    rescue_groups, ColumnGrid, ColumnKernel, ColumnPass, ColumnRegs, Strategy, WG,
};
use crate::gpu::tensor::Tensor;

impl<R: SpatialRank> BatchNorm<R> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_backward_pass(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        saved: &Saved,
        dy_in: &Tensor,
        fused: Option<Fused>,
        (gw, gb): (&Tensor, &Tensor),
        terms: BufferSlice,
        mode: BackwardMode<'_>,
        target: Target,
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        let layout = saved.layout;
        let flags = self.flags(saved.batch_stats, false);
        let ops = (Op::Backward, flags, 0.0);
        let Prepared {
            exec,
            partials,
            uniforms,
        } = self.prepare_op(encoder, (&layout, dy_in.dtype()), ops, target)?;
        let (c, variant) = (layout.c, exec.variant);
        let x = &saved.input;
        // Which kernels make the sums: merged across devices (none), the
        // whole backward in the column kernels, the column sums alone, or
        // the split reductions.
        let own_sums = !matches!(mode, BackwardMode::Merged { .. });
        let columns = matches!(exec.strategy, Strategy::Columns | Strategy::ColumnStats);
        let column_backward = own_sums && columns && mode.dx().is_some();
        let kernel = exec.column_kernel(ColumnPass::Backward);
        let column_sums = own_sums && columns && kernel == ColumnKernel::PerChannel;
        // Whether the column kernels redo sums that overflowed themselves
        // (small inputs, one dispatch) rather than raise the rescue flag.
        let inline_rescue = exec.column_inline_rescue();
        let rescued = own_sums && !((column_backward || column_sums) && inline_rescue);
        // The rescue flag down (the kernels that sum raise it) wherever
        // rescue kernels follow them.
        if rescued {
            let flag = exec.rescue_flag() as u64 * 16;
            encoder.clear_buffer(&partials.buffer, partials.offset + flag, Some(16));
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("batchnorm/backward"),
            timestamp_writes: None,
        });
        let mut rec = Recorder::new(
            &ctx,
            &mut pass,
            &mut self.ws.binds,
            &uniforms,
            dy_in.dtype(),
            exec.thread_partials,
        );
        // Through the epilogue first: dy -> g (grad_residual or scratch).
        let dy = match &fused {
            Some(f) => {
                for (i, ch) in exec.chunks.iter().enumerate() {
                    let step = Elementwise::EpilogueGrad {
                        dy: dy_in.window(ch.start, ch.count),
                        output: f.output.as_ref().map(|y| y.window(ch.start, ch.count)),
                        out: f.target.window(ch.start, ch.count),
                        epilogue: f.bits,
                    };
                    rec.elementwise(variant, i + 1, step, (ch.count, ch.slab))?;
                }
                &f.target
            }
            None => dy_in,
        };
        let (grad_weight, grad_bias) = (gw.binding(), gb.binding());
        let numel = layout.numel();
        // The buffers of the column gradient kernels.
        let column_grads = || ColumnGrads {
            x: x.window(0, numel),
            dy: dy.window(0, numel),
            terms: terms.clone(),
            partials: partials.clone(),
            grad_weight: grad_weight.clone(),
            grad_bias: grad_bias.clone(),
        };
        if let (true, Some(dx)) = (column_backward, mode.dx()) {
            let regs = exec.column_regs(ColumnPass::Backward);
            let step = ColumnStep::Backward {
                grads: column_grads(),
                out: dx.window(0, numel),
                kernel,
                regs,
                inline_rescue,
            };
            rec.columns(step, exec.column_grid(kernel, regs))?;
            if inline_rescue {
                return Ok(());
            }
            // Sums that overflowed f32: those channels again, carefully.
            let step = ColumnStep::Rescue {
                grads: column_grads(),
                out: dx.window(0, numel),
            };
            let grid = ColumnGrid {
                groups: rescue_groups(c),
                threads: WG,
            };
            return rec.columns(step, grid);
        }
        if let BackwardMode::Merged { merged, .. } = mode {
            let step = ChannelStep::GradsApply {
                terms: terms.clone(),
                grad_weight,
                grad_bias,
                merged: BufferSlice::whole(merged),
            };
            rec.channels(step, c)?;
        } else {
            if column_sums {
                let step = ColumnStep::Grads {
                    grads: column_grads(),
                    inline_rescue,
                };
                rec.columns(step, exec.column_grid(kernel, ColumnRegs::Plain))?;
            } else {
                for (i, ch) in exec.chunks.iter().enumerate() {
                    let step = Partial::Grads {
                        x: x.window(ch.start, ch.count),
                        dy: dy.window(ch.start, ch.count),
                        terms: terms.clone(),
                        partials: partials.clone(),
                    };
                    rec.partial(variant, i + 1, step, &ch.reduce)?;
                }
                let step = ChannelStep::GradsFinalize {
                    terms: terms.clone(),
                    partials: partials.clone(),
                    grad_weight: grad_weight.clone(),
                    grad_bias: grad_bias.clone(),
                    groups: exec.finalize_groups(),
                };
                rec.channels(step, c)?;
            }
            // Sums that overflowed f32, redone carefully chunk by chunk
            // (threads return at once where every sum is finite).
            if rescued {
                for (i, ch) in exec.chunks.iter().enumerate() {
                    let step = GradsRescue {
                        x: x.window(ch.start, ch.count),
                        dy: dy.window(ch.start, ch.count),
                        terms: terms.clone(),
                        partials: partials.clone(),
                    };
                    rec.grads_rescue(i + 1, step, (c, exec.rescue_windows(i)))?;
                }
                let step = ChannelStep::GradsRescueFinish {
                    terms: terms.clone(),
                    partials,
                    grad_weight,
                    grad_bias,
                };
                rec.channels(step, c)?;
            }
        }
        let Some(dx) = mode.dx() else {
            return Ok(());
        };
        for (i, ch) in exec.chunks.iter().enumerate() {
            let step = Elementwise::GradInput {
                x: x.window(ch.start, ch.count),
                dy: dy.window(ch.start, ch.count),
                terms: terms.clone(),
                out: dx.window(ch.start, ch.count),
            };
            rec.elementwise(variant, i + 1, step, (ch.count, ch.slab))?;
        }
        Ok(())
    }
}
