//! The uniform block every kernel reads (`Params` in `shaders/common.wgsl`;
//! a unit test checks that both declare the same fields at the same
//! offsets, and the same flag values).

use super::plan::{ExecPlan, ReducePlan};
use crate::semantics::Layout;

/// Training with running statistics: update them in the finalize step.
pub(crate) const FLAG_UPDATE_RUNNING: u32 = 1;
/// The module has `weight` and `bias`.
pub(crate) const FLAG_AFFINE: u32 = 2;
/// Normalise with batch statistics (else the running statistics).
pub(crate) const FLAG_BATCH_STATS: u32 = 4;
/// Eval normalize reading the module's state (bound as `terms`) instead of
/// terms: no eval_prepare dispatch, no terms written.
pub(crate) const FLAG_FROM_STATE: u32 = 8;
/// `head` holds each channel's first value at its index, gathered by
/// `gather_heads` ([`ExecPlan::gathers_heads`]).
pub(crate) const FLAG_GATHERED_HEADS: u32 = 16;
/// Rows reductions with two lanes per thread (`ReducePlan::paired`).
pub(crate) const FLAG_PAIRED_LANES: u32 = 32;
/// The first chunk of a tensor (`grads_rescue` starts its sums there).
pub(crate) const FLAG_FIRST_CHUNK: u32 = 64;

// `P()` in shaders/common.wgsl indexes the params slots with
// `flags >> 31`, which must stay 0.
const _: () = assert!(
    (FLAG_UPDATE_RUNNING
        | FLAG_AFFINE
        | FLAG_BATCH_STATS
        | FLAG_FROM_STATE
        | FLAG_GATHERED_HEADS
        | FLAG_PAIRED_LANES
        | FLAG_FIRST_CHUNK)
        .leading_zeros()
        > 0
);

/// `EPILOGUE` bit of the normalize kernels: add the residual.
pub(crate) const EPILOGUE_RESIDUAL: u32 = 1;
/// `EPILOGUE` bit of the normalize kernels: ReLU.
pub(crate) const EPILOGUE_RELU: u32 = 2;

/// Per-channel term sections the finalize kernels write (`TERMS` in
/// `common.wgsl`).
pub(crate) const TERMS: usize = 8;
/// f32 values per (padded) channel in the terms buffer: the `TERMS`
/// sections and two packed vec4s (`PACKED_*` in `common.wgsl`).
pub(crate) const TERM_FLOATS: usize = TERMS + 8;

/// Shapes and scalars of one dispatch. All fields are 32-bit, so the WGSL
/// struct has the same layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    /// Rows `N` (of the chunk, in chunk dispatches).
    pub n: u32,
    /// Channels `C`.
    pub c: u32,
    /// Length `L` (1 for `(N, C)` inputs).
    pub l: u32,
    /// Values per channel over the whole tensor, `N * L`.
    pub count: u32,
    /// Elements of this chunk.
    pub numel: u32,
    /// Reduction lanes per workgroup (power of two).
    pub lanes_per_group: u32,
    /// Reduction threads per lane; `lanes_per_group * threads_per_lane == WG`.
    pub threads_per_lane: u32,
    /// Workgroups side by side over the lanes.
    pub tiles: u32,
    /// Reduction segments along each lane in this chunk.
    pub segments: u32,
    /// Units per segment.
    pub seg_len: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// This chunk's first row of partial states.
    pub partial_base: u32,
    /// Added to the variance.
    pub eps: f32,
    /// Running-statistics factor for this step.
    pub momentum: f32,
    /// Elements between the start of the chunk's first row and the chunk.
    pub lead: u32,
    /// Subgroups per workgroup for `reduce_subgroup.wgsl`, 0: tree only.
    pub subgroups: u32,
    /// vec4s between the vec4s of one elementwise invocation (whole rows,
    /// or a run slab's block over `SLAB`).
    pub stride: u32,
    /// Reduction units (values, vec4s along L, or rows) per lane in this chunk.
    pub units: u32,
    /// Rows of partial states the finalize steps merge.
    pub partial_rows: u32,
    /// Threads per workgroup of the column kernels, with a lane each (four
    /// in the `*_regs64_lanes` / `*_regs16_lanes` kernels; a power of two,
    /// at most `WG`; their workgroups have that many invocations,
    /// `COLUMN_WG`).
    pub column_lanes: u32,
    /// Virtual channels per channel in the partial states (`C * folds`
    /// per partial row; more than 1 for `Variant::OddRows`).
    pub folds: u32,
    /// Index (in vec4s) in the partials buffer of the flag the kernels
    /// that sum gradients raise where a channel needs the rescue kernels
    /// (cleared by the host before each backward; `ExecPlan::rescue_flag`,
    /// `shaders/rescue_flag.wgsl`).
    pub rescue_flag: u32,
    /// Windows of this chunk's careful gradient walk per channel
    /// (`ExecPlan::rescue_split`; 0 in the totals).
    pub rescue_windows: u32,
    /// Values of a channel per window of that walk.
    pub rescue_window: u32,
}

/// Size of one [`Params`] block.
pub(crate) const PARAMS_SIZE: u64 = std::mem::size_of::<Params>() as u64;

/// Bytes of one `ParamsSlot` (`Params` padded to 16 bytes, `@size(96)` in
/// `shaders/common.wgsl`).
pub(crate) const PARAMS_SLOT: u64 = PARAMS_SIZE.next_multiple_of(16);

/// Bytes of the params binding: two slots, of which the kernels read the
/// first through an index the driver cannot fold (`P()` in
/// `shaders/common.wgsl`: lavapipe would otherwise recompile small shapes'
/// shaders at every dispatch).
pub(crate) const PARAMS_BINDING: u64 = 2 * PARAMS_SLOT;

/// The scalars of one op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OpScalars {
    pub flags: u32,
    pub eps: f32,
    pub momentum: f32,
    /// Subgroups per workgroup where the adapter combines subgroups.
    pub subgroups: u32,
}

impl Params {
    fn base(layout: &Layout, plan: &ReducePlan, s: &OpScalars) -> Self {
        Self {
            n: layout.n as u32,
            c: layout.c as u32,
            l: layout.l as u32,
            count: layout.per_channel() as u32,
            numel: layout.numel() as u32,
            lanes_per_group: plan.lanes_per_group,
            threads_per_lane: plan.threads_per_lane,
            tiles: plan.tiles,
            segments: plan.segments,
            seg_len: plan.seg_len,
            flags: s.flags,
            eps: s.eps,
            momentum: s.momentum,
            ..Default::default()
        }
    }
}

impl ExecPlan {
    /// Params of the per-channel finalize steps: totals over all chunks
    /// (`rescue_flag`: [`ExecPlan::rescue_flag`], found once per op).
    fn total_params(&self, s: &OpScalars, rescue_flag: u32) -> Params {
        let first = self.chunks.first().map(|c| c.reduce).unwrap_or(ReducePlan {
            lanes_per_group: 1,
            threads_per_lane: super::plan::WG,
            tiles: 0,
            segments: 0,
            seg_len: 0,
            paired: false,
            sweep: false,
        });
        Params {
            partial_rows: self.partial_rows,
            folds: self.folds() as u32,
            rescue_flag,
            flags: s.flags | self.heads_flag(),
            ..Params::base(&self.layout, &first, s)
        }
    }

    /// Params of chunk `k` (its reduction and elementwise dispatches).
    fn chunk_params(&self, k: usize, s: &OpScalars, rescue_flag: u32) -> Option<Params> {
        let ch = self.chunks.get(k)?;
        let (rescue_window, rescue_windows) = self.rescue_split(k);
        let base = Params::base(&ch.layout, &ch.reduce, s);
        // Subgroup combining applies when one lane owns a workgroup.
        let subgroups = if ch.reduce.lanes_per_group == 1 {
            s.subgroups
        } else {
            0
        };
        Some(Params {
            count: self.layout.per_channel() as u32,
            numel: ch.count as u32,
            lead: ch.lead as u32,
            partial_base: ch.partial_base,
            units: self.variant.units(&ch.layout) as u32,
            stride: ch.slab.stride as u32,
            partial_rows: self.partial_rows,
            subgroups,
            column_lanes: self.column_lanes,
            folds: self.folds() as u32,
            rescue_flag,
            rescue_windows: rescue_windows as u32,
            rescue_window: rescue_window as u32,
            flags: s.flags
                | self.heads_flag()
                | if ch.reduce.paired {
                    FLAG_PAIRED_LANES
                } else {
                    0
                }
                | if k == 0 { FLAG_FIRST_CHUNK } else { 0 },
            ..base
        })
    }

    /// `FLAG_GATHERED_HEADS` where the plan gathers its heads.
    fn heads_flag(&self) -> u32 {
        if self.gathers_heads() {
            FLAG_GATHERED_HEADS
        } else {
            0
        }
    }

    /// Slot 0: the totals; slot `k + 1`: chunk `k`.
    pub fn all_params(&self, s: &OpScalars) -> Vec<Params> {
        let flag = self.rescue_flag() as u32;
        std::iter::once(self.total_params(s, flag))
            .chain((0..self.chunks.len()).filter_map(|k| self.chunk_params(k, s, flag)))
            .collect()
    }
}
