//! Launch planning, pure functions of a layout and the device's limits:
//! which kernel variant a layout takes, how a reduction is split over
//! workgroups, how a tensor larger than one storage binding is chunked, and
//! how many workgroups each dispatch needs. Nothing here touches wgpu.

use crate::semantics::Layout;

/// Threads per workgroup in every kernel (`WG` in `shaders/common.wgsl`,
/// checked by a unit test).
pub(crate) const WG: u32 = 256;
/// vec4s per elementwise invocation (`SLAB` in `shaders/elementwise.wgsl`).
pub(crate) const SLAB: usize = 8;
/// Partial states per channel the finalize steps merge at most where
/// threads write their own partials: a workgroup per channel then gives
/// each thread `THREAD_MERGE_MAX_STATES` of them at most, within Mesa's
/// llvmpipe's 65535 loop iterations per invocation
/// ([`ExecPlan::finalize_groups`]); more take the workgroup merge, whose
/// partial rows are the segments.
const MAX_MERGE_STATES: u64 = WG as u64 * finalize::THREAD_MERGE_MAX_STATES as u64;
/// One chunk of a tensor: an element range small enough for one storage
/// binding, starting on an aligned offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// First element of the chunk.
    pub start: usize,
    /// Elements in the chunk.
    pub count: usize,
    /// Elements between the start of the chunk's first row and `start`.
    pub lead: usize,
    /// The rows the chunk overlaps, viewed as a `(rows, C, L)` tensor.
    pub layout: Layout,
    /// Reduction split over those rows.
    pub reduce: ReducePlan,
    /// The chunk's first row of partial states (one row per segment, or
    /// per segment and thread with per-thread partials).
    pub partial_base: u32,
    /// How the elementwise kernels cover the chunk.
    pub slab: Slab,
}

/// How one op over a whole tensor is dispatched: chunks within
/// `max_storage_buffer_binding_size`, whose partial states the finalize
/// steps merge in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecPlan {
    pub layout: Layout,
    pub variant: Variant,
    pub chunks: Vec<Chunk>,
    /// Rows of partial states over all chunks.
    pub partial_rows: u32,
    /// Elements of the first row bound for the per-channel shift.
    pub head: usize,
    /// Reduction threads write their own partials (`THREAD_PARTIALS`).
    pub thread_partials: bool,
    /// How statistics are gathered.
    pub strategy: Strategy,
    /// Threads per workgroup of the column kernels (a lane each, or four
    /// in the `*_regs64_lanes` kernels: `Strategy::column_lanes`), and the
    /// invocations of their workgroups (`ExecPlan::column_grid`).
    pub column_lanes: u32,
    /// Rows up to which the column kernels may keep a lane's values in
    /// registers (`Strategy::reg_rows`).
    pub column_reg_rows: u32,
}

/// The device limits a plan respects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceLimits {
    pub max_binding: u64,
    pub align: u64,
    pub max_dim: u32,
    /// Storage buffers one kernel may bind.
    pub storage_buffers: u32,
    /// The adapter ends a shader invocation's loops after 65535 iterations
    /// in all (Mesa's llvmpipe: CPU adapters), so plans must keep every
    /// invocation's walk within bounds ([`ExecPlan::check_loops`]).
    pub bounded_loops: bool,
}

impl DeviceLimits {
    pub fn of(limits: &wgpu::Limits, device_type: wgpu::DeviceType) -> Self {
        Self {
            max_binding: limits.max_storage_buffer_binding_size,
            align: u64::from(limits.min_storage_buffer_offset_alignment),
            max_dim: limits.max_compute_workgroups_per_dimension,
            storage_buffers: limits.max_storage_buffers_per_shader_stage,
            bounded_loops: device_type == wgpu::DeviceType::Cpu,
        }
    }

    /// Bytes the partial states may take in their binding: all of it but
    /// the vec4 of the rescue flag after them
    /// ([`ExecPlan::rescue_flag`]).
    fn partial_budget(&self) -> u64 {
        self.max_binding.saturating_sub(16)
    }

    /// Workgroups one dispatch may have on a 2-D grid.
    fn max_groups(&self) -> usize {
        (u64::from(self.max_dim) * u64::from(self.max_dim)).min(u64::from(u32::MAX)) as usize
    }
}

/// Splits a non-empty `layout` of `elem_size`-byte values into chunks whose
/// bytes fit one binding and start on aligned offsets. An `Err` says why the
/// device cannot take the layout.
pub(crate) fn plan_exec(
    layout: &Layout,
    elem_size: usize,
    limits: DeviceLimits,
    merge: MergeModel,
) -> Result<ExecPlan, String> {
    let layout = &canonical(layout);
    let variant = Variant::of(layout);
    let max_groups = limits.max_groups();
    // A variant's reduction tiles (they do not depend on the target) and
    // the workgroups it aims for.
    let tiles_and_target = |variant: Variant| {
        let tiles = plan_reduce(layout, variant, max_groups, 1).tiles as usize;
        (tiles, merge.groups_for(variant, tiles))
    };
    let numel = layout.numel();
    let row = layout.row();
    let align_elems = limits.align.max(16) as usize / elem_size;
    // Bound by the binding size and by the elementwise grid (4 values per thread).
    let max_elems = (limits.max_binding as usize / elem_size)
        .min(max_groups.saturating_mul(WG as usize * 4))
        / align_elems
        * align_elems;
    if max_elems == 0 {
        return Err(format!(
            "storage bindings of {} bytes are too small",
            limits.max_binding
        ));
    }
    // Virtual rows of odd C (or C * L) would be cut mid-lane by a chunk start.
    let variant = if variant == Variant::OddRows && numel > max_elems {
        Variant::run_fallback(layout)
    } else {
        variant
    };
    // Virtual channels multiply the partial states by `folds`: where they
    // would not fit one binding, the masked or general reductions (C wide)
    // instead.
    let variant = if variant == Variant::OddRows {
        let p = plan_reduce(layout, variant, max_groups, tiles_and_target(variant).1);
        let width = (layout.c * variant.folds(layout)) as u64;
        let rows = u64::from(p.segments) + u64::from(variant.tail_rows());
        if rows * width * 16 > limits.partial_budget() {
            Variant::run_fallback(layout)
        } else {
            variant
        }
    } else {
        variant
    };
    // (N, C) rows: chunks of whole rows where a row is small next to a
    // chunk, so that no chunk starts or ends inside a row (the paired
    // lanes need that; lavapipe, Zen 5: `1048576x64` in two chunks
    // unpaired 2.9x a copy, `524288x64` in one paired 2.0x).
    let max_elems = match variant {
        Variant::Rows => {
            let unit = variant::lcm(row, align_elems);
            if unit <= max_elems / 2 {
                max_elems / unit * unit
            } else {
                max_elems
            }
        }
        _ => max_elems,
    };
    let (tiles, target) = tiles_and_target(variant);
    if tiles > max_groups {
        return Err(format!(
            "{} channels need {tiles} workgroups; the device dispatches at most {max_groups}",
            layout.c
        ));
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < numel {
        let count = max_elems.min(numel - start);
        let row0 = start / row;
        let row1 = (start + count).div_ceil(row);
        let sub = Layout {
            n: row1 - row0,
            ..*layout
        };
        let reduce = plan_reduce(&sub, variant, max_groups, target);
        let lead = start - row0 * row;
        let plane =
            (variant == Variant::Planes && lead.is_multiple_of(layout.l)).then_some(layout.l / 4);
        let run = (variant.general_elementwise() || variant == Variant::Planes).then_some(layout.l);
        chunks.push(Chunk {
            start,
            count,
            lead,
            layout: sub,
            reduce,
            // Set below, once the splits are final.
            partial_base: 0,
            slab: Slab::of(count, row, plane, run),
        });
        start += count;
    }
    // The four-channel lanes load whole aligned vec4s (`load4`): a chunk
    // starting off a vec4 boundary of its rows would read wrong values.
    if variant.four_channel_lanes() && chunks.iter().any(|c| c.lead % 4 != 0) {
        return Err(format!(
            "{layout:?}: a chunk of rows starts off a vec4 boundary"
        ));
    }
    // Per-thread partials: threads_per_lane rows of partials per segment,
    // taken only where they stay small next to the tensor (they are
    // written and read once more), counted for the splits as they run:
    // with each thread folding at least THREAD_MIN_UNITS units where its
    // lane has them (`ReducePlan::thicker`, applied below).
    let partial_width = (layout.c * variant.folds(layout)) as u64;
    let thicker = |chunks: &[Chunk]| {
        resplit(chunks, |c| {
            c.reduce.thicker(variant.units(&c.layout), THREAD_MIN_UNITS)
        })
    };
    let thread_partials_fit = |chunks: &[Chunk]| {
        let chunks = &thicker(chunks);
        let thread_rows: u64 = chunks
            .iter()
            .map(|c| u64::from(c.reduce.segments) * u64::from(c.reduce.threads_per_lane))
            .sum::<u64>()
            + u64::from(variant.tail_rows());
        let thread_bytes = thread_rows * partial_width * 16;
        let states = thread_rows * variant.folds(layout) as u64;
        thread_rows <= u64::from(u32::MAX)
            && states <= MAX_MERGE_STATES
            && thread_bytes <= limits.partial_budget()
            && thread_bytes <= ((numel * elem_size) as u64 / 4).max(1 << 20)
    };
    // Planes and masked runs spread over channels (their fewer partial
    // states may fit where one channel per workgroup's would not).
    if merge.thread_partials && spreads(layout, variant) {
        let spread = resplit(&chunks, |c| {
            plan_spread(&c.layout, variant, max_groups, target)
        });
        if thread_partials_fit(&spread) {
            chunks = spread;
        }
    }
    let thread_partials = merge.thread_partials && thread_partials_fit(&chunks);
    // Rows (virtual rows too) of at least 256 channels sweep (any chunks:
    // a thread's rows stay its own); paired lanes: (N, C) of
    // 64 <= C < 256 (C % 4 == 0), in chunks of whole rows (a thread's two
    // lanes share their rows).
    let rows_variant = matches!(variant, Variant::Rows | Variant::OddRows);
    let lanes = variant.reduce_layout(layout).c.div_ceil(4);
    if thread_partials && rows_variant && lanes >= SWEEP_MIN_LANES {
        let swept = resplit(&chunks, |c| {
            plan_sweep(&c.layout, variant, max_groups, target)
        });
        if thread_partials_fit(&swept) {
            chunks = swept;
        }
    } else if thread_partials
        && variant == Variant::Rows
        && layout.l == 1
        && chunks.iter().all(|c| c.lead == 0 && c.count % row == 0)
        && lanes >= PAIRED_MIN_LANES
    {
        let paired = resplit(&chunks, |c| c.reduce.paired());
        if paired.iter().all(|c| c.reduce.lanes_per_group >= PAIR_GAP)
            && thread_partials_fit(&paired)
        {
            chunks = paired;
        }
    }
    // Per-thread partials: each thread folds at least THREAD_MIN_UNITS
    // units where its lane has them.
    if thread_partials {
        chunks = thicker(&chunks);
    }
    // Partial rows from the chunks' final splits (spread or paired ones
    // may differ from the first): a row per segment, or per thread.
    let mut partial_base = 0u32;
    for c in &mut chunks {
        c.partial_base = partial_base;
        let rows = if thread_partials {
            c.reduce.threads_per_lane
        } else {
            1
        };
        partial_base = (c.reduce.segments.checked_mul(rows))
            .and_then(|r| partial_base.checked_add(r))
            .ok_or_else(|| "too many reduction segments".to_string())?;
    }
    let strategy = Strategy::of(layout, merge, chunks.len() == 1, limits.storage_buffers);
    let partial_rows = partial_base
        .checked_add(variant.tail_rows())
        .ok_or_else(|| "too many reduction segments".to_string())?;
    let plan = ExecPlan {
        layout: *layout,
        variant,
        chunks,
        partial_rows,
        head: row.min(max_elems),
        thread_partials,
        strategy,
        column_lanes: strategy.column_lanes(layout, merge),
        column_reg_rows: Strategy::reg_rows(merge) as u32,
    };
    if limits.bounded_loops {
        plan.check_loops()?;
    }
    Ok(plan)
}

impl ExecPlan {
    /// Partial states written by all chunks (16 bytes each): rows of
    /// `C * folds` (virtual) channels.
    pub fn partial_count(&self) -> usize {
        self.partial_rows as usize * self.layout.c * self.folds()
    }

    /// Whether the input's first row is longer than the `head` binding
    /// holds (one storage binding): then `gather_heads` collects each
    /// channel's first value from the chunks of that row
    /// ([`ExecPlan::head_chunks`]) for the kernels that take the shift.
    pub fn gathers_heads(&self) -> bool {
        self.head < self.layout.row() && self.layout.numel() > 0
    }

    /// The chunks (with their index) that hold part of the first row.
    pub fn head_chunks(&self) -> impl Iterator<Item = (usize, &Chunk)> {
        let row = self.layout.row();
        self.chunks
            .iter()
            .enumerate()
            .filter(move |(_, c)| c.start < row)
    }

    /// Virtual channels per channel in the partial states.
    pub fn folds(&self) -> usize {
        self.variant.folds(&self.layout)
    }
}

/// `chunks` with each chunk's reduction split replaced by `split(chunk)`
/// (the sweeps, paired lanes and spread planes of CPU adapters).
fn resplit(chunks: &[Chunk], split: impl Fn(&Chunk) -> ReducePlan) -> Vec<Chunk> {
    (chunks.iter())
        .map(|c| Chunk {
            reduce: split(c),
            ..*c
        })
        .collect()
}

mod column_kernel;
mod column_regs;
mod finalize;
mod grid;
#[cfg(test)]
mod loop_tests;
mod merge;
mod reduce;
#[cfg(test)]
mod reduce_tests;
mod slab;
pub(crate) mod strategy;
#[cfg(test)]
mod strategy_tests;
#[cfg(test)]
mod tests;
mod variant;
#[cfg(test)]
mod variant_tests;

pub(crate) use column_kernel::{ColumnKernel, ColumnPass};
pub(crate) use grid::{channel_groups, grid, rescue_groups, rescue_window_groups, vec4_groups};
#[cfg(test)]
pub(crate) use grid::{MAX_RESCUE_WINDOWS, RESCUE_WINDOW};
pub(crate) use merge::MergeModel;
pub(crate) use reduce::{plan_reduce, ReducePlan, PAIR_GAP};
use reduce::{
    plan_spread, plan_sweep, spreads, PAIRED_MIN_LANES, SWEEP_MIN_LANES, THREAD_MIN_UNITS,
};
pub(crate) use slab::Slab;
pub(crate) use strategy::{canonical, ColumnGrid, ColumnRegs, Strategy};
pub(crate) use variant::Variant;
