//! The steps the [`Recorder`](super::launch::Recorder) launches, one enum
//! per kernel family, each variant naming exactly the buffers its kernel
//! binds.

use super::buffer::BufferSlice;
use super::plan::{ColumnKernel, ColumnRegs};

/// The partial reductions, with the buffers each binds.
pub(crate) enum Partial {
    /// `(count, mean, M2, sum)` partial states of `x`.
    Moments {
        x: BufferSlice,
        head: BufferSlice,
        partials: BufferSlice,
    },
    /// `(sum dy, sum dy * x_hat)` partial sums, with the forward's terms.
    Grads {
        x: BufferSlice,
        dy: BufferSlice,
        terms: BufferSlice,
        partials: BufferSlice,
    },
}

/// The per-channel steps (`finalize.wgsl`), with the buffers each binds.
pub(crate) enum ChannelStep {
    /// Merge moment partials into terms; update the running statistics
    /// (`groups`: one workgroup per channel, see
    /// [`ExecPlan::finalize_groups`](super::plan::ExecPlan::finalize_groups)).
    MomentsFinalize {
        terms: BufferSlice,
        partials: BufferSlice,
        state: BufferSlice,
        head: BufferSlice,
        groups: bool,
    },
    /// Terms from the running statistics.
    EvalPrepare {
        terms: BufferSlice,
        state: BufferSlice,
    },
    /// A shard's merged moments out (`groups` as in `MomentsFinalize`).
    MomentsExport {
        partials: BufferSlice,
        head: BufferSlice,
        moments_out: BufferSlice,
        groups: bool,
    },
    /// Terms (and the running update) from moments merged across devices.
    MomentsApply {
        terms: BufferSlice,
        state: BufferSlice,
        head: BufferSlice,
        merged: BufferSlice,
    },
    /// Merge gradient partials into grad_weight, grad_bias and terms
    /// (`groups` as in `MomentsFinalize`).
    GradsFinalize {
        terms: BufferSlice,
        partials: BufferSlice,
        grad_weight: BufferSlice,
        grad_bias: BufferSlice,
        groups: bool,
    },
    /// grad_weight, grad_bias and the grad_input terms of the channels
    /// `GradsRescue` summed again, from its carried sums.
    GradsRescueFinish {
        terms: BufferSlice,
        partials: BufferSlice,
        grad_weight: BufferSlice,
        grad_bias: BufferSlice,
    },
    /// The same from gradient sums merged across devices.
    GradsApply {
        terms: BufferSlice,
        grad_weight: BufferSlice,
        grad_bias: BufferSlice,
        merged: BufferSlice,
    },
}

/// Gradient sums redone carefully over one chunk, for the channels whose
/// sums `GradsFinalize` left non-finite (`grads_rescue`: one thread per
/// channel, the sums carried from chunk to chunk in `partials`, two vec4s
/// per channel; `ChannelStep::GradsRescueFinish` then writes the outputs).
pub(crate) struct GradsRescue {
    pub x: BufferSlice,
    pub dy: BufferSlice,
    pub terms: BufferSlice,
    pub partials: BufferSlice,
}

/// The column kernels (`columns.wgsl`), with the buffers each binds.
pub(crate) enum ColumnStep {
    /// Statistics (or running statistics), terms, running update and
    /// `out = act((x - shift) * scale + offset + residual)`.
    Forward {
        x: BufferSlice,
        terms: BufferSlice,
        state: BufferSlice,
        out: BufferSlice,
        residual: Option<BufferSlice>,
        epilogue: u32,
        /// Channels per thread and how they are read.
        kernel: ColumnKernel,
        /// Rows kept in registers (`ExecPlan::column_regs`).
        regs: ColumnRegs,
    },
    /// Gradient sums, grad_weight, grad_bias and `out = dx` (raising the
    /// rescue flag in `partials` for sums that are not finite).
    Backward {
        grads: ColumnGrads,
        out: BufferSlice,
        /// Channels per thread and how they are read.
        kernel: ColumnKernel,
        /// Rows kept in registers (`ExecPlan::column_regs`).
        regs: ColumnRegs,
        /// Sums that are not finite redone in the kernel
        /// (`ExecPlan::column_inline_rescue`), not left to `Rescue`.
        inline_rescue: bool,
    },
    /// Gradient sums, grad_weight, grad_bias and grad_input terms only
    /// (marking sums that are not finite for `GradsRescue`, or redoing
    /// them with `inline_rescue`).
    Grads {
        grads: ColumnGrads,
        inline_rescue: bool,
    },
    /// After `Backward`, where it raised the flag: the channels of
    /// non-finite sums summed again carefully, their grad_weight,
    /// grad_bias and `out = dx` rewritten.
    Rescue {
        grads: ColumnGrads,
        out: BufferSlice,
    },
}

/// The buffers every column gradient kernel binds: the inputs, the
/// forward's terms, the rescue flag's partials and the two parameter
/// gradients.
#[derive(Clone)]
pub(crate) struct ColumnGrads {
    pub x: BufferSlice,
    pub dy: BufferSlice,
    pub terms: BufferSlice,
    pub partials: BufferSlice,
    pub grad_weight: BufferSlice,
    pub grad_bias: BufferSlice,
}

/// The elementwise passes, with the buffers each binds.
pub(crate) enum Elementwise {
    /// `out = act((x - shift) * scale + offset + residual)`, `epilogue`
    /// the `EPILOGUE` bits.
    Normalize {
        x: BufferSlice,
        terms: BufferSlice,
        out: BufferSlice,
        residual: Option<BufferSlice>,
        epilogue: u32,
    },
    /// `out = dy` through the epilogue (`output` for a ReLU's mask).
    EpilogueGrad {
        dy: BufferSlice,
        output: Option<BufferSlice>,
        out: BufferSlice,
        epilogue: u32,
    },
    /// `out = scale * (dy + slope * (x - shift) + intercept)`.
    GradInput {
        x: BufferSlice,
        dy: BufferSlice,
        terms: BufferSlice,
        out: BufferSlice,
    },
}
