//! Typed kernel launches: one [`Recorder`] method per kernel family
//! (`partial`, `channels`, `columns`, `elementwise`), each taking a typed
//! step (`gpu/steps.rs`) with exactly the buffers that kernel binds, each under its role ([`Binding`], the
//! only place binding indices are named in Rust). Bind groups are cached
//! per module, so a training loop that passes the same tensors back
//! (`forward_into` / `backward_into`) creates none in steady state.

use super::bind_cache::{BindGroupCache, BindKey};
use super::binding::Binding;
use super::buffer::BufferSlice;
use super::context::GpuContext;
use super::params::PARAMS_BINDING;
use super::pipelines::Kernel;
use super::plan::{
    channel_groups, grid, rescue_groups, rescue_window_groups, vec4_groups, ColumnGrid, ReducePlan,
    Slab, Variant,
};
pub(crate) use super::steps::{
    ChannelStep, ColumnGrads, ColumnStep, Elementwise, GradsRescue, Partial,
};
use crate::error::Result;
use crate::types::DType;

/// Records dispatches into one compute pass for tensors of one dtype,
/// reading parameters from a module's uniform buffer (slot 0: totals;
/// slot `k + 1`: chunk `k`).
pub(crate) struct Recorder<'a, 'p> {
    ctx: &'a GpuContext,
    pass: &'a mut wgpu::ComputePass<'p>,
    cache: &'a mut BindGroupCache,
    uniforms: &'a wgpu::Buffer,
    uniform_stride: u64,
    dtype: DType,
    thread_partials: bool,
}

impl<'a, 'p> Recorder<'a, 'p> {
    pub fn new(
        ctx: &'a GpuContext,
        pass: &'a mut wgpu::ComputePass<'p>,
        cache: &'a mut BindGroupCache,
        uniforms: &'a wgpu::Buffer,
        dtype: DType,
        thread_partials: bool,
    ) -> Self {
        Self {
            ctx,
            pass,
            cache,
            uniforms,
            uniform_stride: uniform_stride(ctx.device()),
            dtype,
            thread_partials,
        }
    }

    fn dispatch(
        &mut self,
        kernel: Kernel,
        slot: usize,
        bound: Vec<(Binding, BufferSlice)>,
        groups: u32,
    ) -> Result<()> {
        let pipeline = self
            .ctx
            .pipelines()
            .get(kernel, self.dtype, self.thread_partials)?;
        let mut slices = Vec::with_capacity(bound.len() + 1);
        slices.push((
            Binding::Params,
            BufferSlice {
                buffer: self.uniforms.clone(),
                offset: slot as u64 * self.uniform_stride,
                size: PARAMS_BINDING,
                owner: None,
            },
        ));
        slices.extend(bound);
        let key = BindKey {
            kernel,
            dtype: self.dtype,
            thread_partials: self.thread_partials,
            slices,
        };
        let device = self.ctx.device();
        let group = self
            .cache
            .get_or_create(device, &pipeline, key, "batchnorm/bind-group");
        let (gx, gy) = grid(groups, device.limits().max_compute_workgroups_per_dimension);
        self.pass.set_pipeline(&pipeline);
        self.pass.set_bind_group(0, &group, &[]);
        self.pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }

    /// A partial reduction over chunk `slot - 1` (one dispatch per chunk).
    pub fn partial(
        &mut self,
        variant: Variant,
        slot: usize,
        step: Partial,
        reduce: &ReducePlan,
    ) -> Result<()> {
        use Binding::*;
        let (groups, sweep) = (reduce.groups(), reduce.sweep);
        let (kernel, bound) = match step {
            Partial::Moments { x, head, partials } => (
                Kernel::MomentsPartial(variant, sweep),
                vec![(X, x), (Partials, partials), (Head, head)],
            ),
            Partial::Grads {
                x,
                dy,
                terms,
                partials,
            } => (
                Kernel::GradsPartial(variant, sweep),
                vec![(X, x), (Dy, dy), (Terms, terms), (Partials, partials)],
            ),
        };
        self.dispatch(kernel, slot, bound, groups)
    }

    /// A per-channel step over `channels` channels (totals in slot 0).
    pub fn channels(&mut self, step: ChannelStep, channels: usize) -> Result<()> {
        use Binding::*;
        let (kernel, bound) = match step {
            ChannelStep::MomentsFinalize {
                terms,
                partials,
                state,
                head,
                groups,
            } => (
                Kernel::MomentsFinalize(groups),
                vec![
                    (Terms, terms),
                    (Partials, partials),
                    (State, state),
                    (Head, head),
                ],
            ),
            ChannelStep::EvalPrepare { terms, state } => {
                (Kernel::EvalPrepare, vec![(Terms, terms), (State, state)])
            }
            ChannelStep::MomentsExport {
                partials,
                head,
                moments_out,
                groups,
            } => (
                Kernel::MomentsExport(groups),
                vec![
                    (Partials, partials),
                    (Head, head),
                    (MomentsOut, moments_out),
                ],
            ),
            ChannelStep::MomentsApply {
                terms,
                state,
                head,
                merged,
            } => (
                Kernel::MomentsApply,
                vec![
                    (Terms, terms),
                    (State, state),
                    (Head, head),
                    (Merged, merged),
                ],
            ),
            ChannelStep::GradsFinalize {
                terms,
                partials,
                grad_weight,
                grad_bias,
                groups,
            } => (
                Kernel::GradsFinalize(groups),
                vec![
                    (Terms, terms),
                    (Partials, partials),
                    (GradWeight, grad_weight),
                    (GradBias, grad_bias),
                ],
            ),
            ChannelStep::GradsRescueFinish {
                terms,
                partials,
                grad_weight,
                grad_bias,
            } => (
                Kernel::GradsRescueFinish,
                vec![
                    (Terms, terms),
                    (Partials, partials),
                    (GradWeight, grad_weight),
                    (GradBias, grad_bias),
                ],
            ),
            ChannelStep::GradsApply {
                terms,
                grad_weight,
                grad_bias,
                merged,
            } => (
                Kernel::GradsApply,
                vec![
                    (Terms, terms),
                    (GradWeight, grad_weight),
                    (GradBias, grad_bias),
                    (Merged, merged),
                ],
            ),
        };
        let groups = match kernel {
            Kernel::MomentsFinalize(true)
            | Kernel::MomentsExport(true)
            | Kernel::GradsFinalize(true) => channels as u32,
            Kernel::GradsRescueFinish => rescue_groups(channels),
            _ => channel_groups(channels),
        };
        self.dispatch(kernel, 0, bound, groups)
    }
}

impl<'a, 'p> Recorder<'a, 'p> {
    /// `grads_rescue` over chunk `slot - 1` (`windows`: the chunk's per
    /// channel, [`ExecPlan::rescue_windows`]), then, for more than one,
    /// `grads_rescue_merge`, one thread per channel.
    ///
    /// [`ExecPlan::rescue_windows`]: super::plan::ExecPlan::rescue_windows
    pub fn grads_rescue(
        &mut self,
        slot: usize,
        step: GradsRescue,
        (channels, windows): (usize, usize),
    ) -> Result<()> {
        use Binding::*;
        let GradsRescue {
            x,
            dy,
            terms,
            partials,
        } = step;
        let merged = vec![(Terms, terms.clone()), (Partials, partials.clone())];
        let bound = vec![(X, x), (Dy, dy), (Terms, terms), (Partials, partials)];
        let items = channels.saturating_mul(windows);
        let groups = rescue_window_groups(items);
        self.dispatch(Kernel::GradsRescue, slot, bound, groups)?;
        if windows < 2 {
            return Ok(());
        }
        let groups = rescue_groups(channels);
        self.dispatch(Kernel::GradsRescueMerge, slot, merged, groups)
    }

    /// `gather_heads` over chunk `slot - 1` of `x` (its binding), one
    /// thread per channel, into `heads` (`channels` values).
    pub fn gather_heads(
        &mut self,
        slot: usize,
        x: BufferSlice,
        heads: BufferSlice,
        channels: usize,
    ) -> Result<()> {
        let bound = vec![(Binding::X, x), (Binding::Heads, heads)];
        self.dispatch(Kernel::GatherHeads, slot, bound, channel_groups(channels))
    }
}

// Column and elementwise launches.
impl<'a, 'p> Recorder<'a, 'p> {
    /// A column kernel on `grid` (one thread per lane, or per four lanes
    /// in the `*_regs64_lanes` / `*_regs16_lanes` kernels; the tensor is
    /// one chunk, in slot 1).
    pub fn columns(&mut self, step: ColumnStep, grid: ColumnGrid) -> Result<()> {
        let threads = grid.threads;
        use Binding::*;
        let (kernel, bound) = match step {
            ColumnStep::Forward {
                x,
                terms,
                state,
                out,
                residual,
                epilogue,
                kernel,
                regs,
            } => {
                // Without a residual the binding holds x (read, not used).
                let residual = residual.unwrap_or_else(|| x.clone());
                (
                    Kernel::ForwardColumns(epilogue, regs, kernel, threads),
                    vec![
                        (X, x),
                        (Terms, terms),
                        (State, state),
                        (Out, out),
                        (Residual, residual),
                    ],
                )
            }
            ColumnStep::Backward {
                grads,
                out,
                kernel,
                regs,
                inline_rescue,
            } => (
                Kernel::BackwardColumns(regs, kernel, inline_rescue, threads),
                column_grads_bound(grads, Some(out)),
            ),
            ColumnStep::Grads {
                grads,
                inline_rescue,
            } => (
                Kernel::GradsColumns(inline_rescue, threads),
                column_grads_bound(grads, None),
            ),
            ColumnStep::Rescue { grads, out } => (
                Kernel::BackwardColumnsRescue,
                column_grads_bound(grads, Some(out)),
            ),
        };
        self.dispatch(kernel, 1, bound, grid.groups)
    }

    /// An elementwise pass over chunk `slot - 1` of `count` elements in
    /// rows of `row`.
    pub fn elementwise(
        &mut self,
        variant: Variant,
        slot: usize,
        step: Elementwise,
        (count, slab): (usize, Slab),
    ) -> Result<()> {
        use Binding::*;
        let groups = match step {
            Elementwise::EpilogueGrad { .. } => vec4_groups(count),
            _ => slab.groups(),
        };
        let (kernel, bound) = match step {
            Elementwise::Normalize {
                x,
                terms,
                out,
                residual,
                epilogue,
            } => {
                // Without a residual the binding holds x (read, not used).
                let residual = residual.unwrap_or_else(|| x.clone());
                (
                    Kernel::Normalize(variant, slab.runs, epilogue),
                    vec![(X, x), (Terms, terms), (Out, out), (Residual, residual)],
                )
            }
            Elementwise::GradInput { x, dy, terms, out } => (
                Kernel::GradInput(variant, slab.runs),
                vec![(X, x), (Dy, dy), (Terms, terms), (Out, out)],
            ),
            Elementwise::EpilogueGrad {
                dy,
                output,
                out,
                epilogue,
            } => {
                // Without a ReLU the output is not read; dy stands in.
                let output = output.unwrap_or_else(|| dy.clone());
                (
                    Kernel::EpilogueGrad(epilogue),
                    vec![(Dy, dy), (Output, output), (Out, out)],
                )
            }
        };
        self.dispatch(kernel, slot, bound, groups)
    }
}

/// The bindings of a column gradient kernel: its `ColumnGrads`, then
/// `out` (dx) where it writes one.
fn column_grads_bound(g: ColumnGrads, out: Option<BufferSlice>) -> Vec<(Binding, BufferSlice)> {
    use Binding::*;
    let mut bound = vec![
        (X, g.x),
        (Dy, g.dy),
        (Terms, g.terms),
        (Partials, g.partials),
        (GradWeight, g.grad_weight),
        (GradBias, g.grad_bias),
    ];
    bound.extend(out.map(|o| (Out, o)));
    bound
}

/// Bytes between uniform slots: one params binding (`PARAMS_BINDING`, two
/// `ParamsSlot`s) per aligned slot.
pub(crate) fn uniform_stride(device: &wgpu::Device) -> u64 {
    let align = u64::from(device.limits().min_uniform_buffer_offset_alignment).max(1);
    PARAMS_BINDING.next_multiple_of(align)
}
