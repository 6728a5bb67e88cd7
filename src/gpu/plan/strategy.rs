//! Which kernels an op takes for a layout: the column kernels or the split
//! reductions, and the layout the kernels walk (one channel's values as
//! rows of a power of two).

pub(crate) use super::column_regs::{ColumnGrid, ColumnRegs};
pub(crate) use super::column_regs::{COLUMN_REGS_16, COLUMN_REG_LANES_64};
use super::reduce::SWEEP_MIN_LANES;
use super::{MergeModel, WG};
use crate::semantics::Layout;

/// The column kernels take `(N, C)` inputs with at most this many rows
/// (`Tuning::columns` forced on: on any adapter); `REG_ROWS_256` in
/// `shaders/common.wgsl`, the rows the largest register arrays hold.
pub(crate) const COLUMN_MAX_ROWS: usize = 256;
/// Rows the smaller register arrays hold (`REG_ROWS_64`).
pub(crate) const COLUMN_REGS_64: usize = 64;
/// Rows up to which `columns4.wgsl`'s plain kernels keep a lane's values in
/// registers (`REG_ROWS` there).
pub(crate) const COLUMN_SMALL_REG_ROWS: usize = 8;
/// Rows beyond which a GPU's column kernels would be latency-bound (each
/// thread walks its rows one after another) where the split reductions
/// run in parallel; CPU adapters take up to `COLUMN_MAX_ROWS`.
const COLUMN_GPU_ROWS: usize = 16;
/// Rows up to which a GPU's column kernels take inputs of at least
/// `COLUMN_GPU_WIDE_LANES` four-channel lanes: there a thread's 17 to 32
/// rows cost less than three dispatches over partial states (H100, three
/// alternating runs, x a copy of 16 MiB: `32x131072` training forward
/// 1.77-1.83 -> 1.57-1.58, backward 1.86-1.89 -> 1.77-1.83; `17x246724`
/// 1.85-1.87 -> 1.48-1.51 and 1.91-1.95 -> 1.64-1.72; `32x32768` even;
/// `32x8192` 7% slower, its lanes too few to fill the card).
const COLUMN_GPU_WIDE_ROWS: usize = 32;
/// Four-channel lanes (`C / 4`, C a multiple of 4: the one-channel lanes
/// of odd C were not measured there) from which `COLUMN_GPU_WIDE_ROWS`
/// applies.
const COLUMN_GPU_WIDE_LANES: usize = 8192;
/// Inputs of at most this many values are latency-bound: the column
/// kernels do them in one dispatch.
pub(crate) const COLUMN_SMALL: usize = 1 << 16;
/// Rows of such small inputs the column kernels take on GPUs (CPU
/// adapters: `COLUMN_MAX_ROWS`).
const COLUMN_GPU_SMALL_ROWS: usize = 64;
/// Rows from which `C % 4 != 0` takes four-channel lanes where threads
/// write their own partials (CPU adapters' merge model, or
/// `Tuning::thread_partials` forced) and those lanes would sweep (enough
/// lanes, more than 2^16 values: [`lanes_sweep`]; they do sweep from
/// `FORWARD_SWEEP_MIN_ROWS`), in `lanes4_odd.wgsl`: the training forward
/// without a residual from here, the other passes from
/// `ODD_FOUR_BACKWARD_MIN_ROWS`. One channel per thread walks each
/// channel's rows a whole row apart, in 32-byte pieces per SIMD group, and
/// its speed then hangs on the row's stride:
/// lavapipe, Zen 5, three alternations, training forward x a copy, one
/// channel per thread against four: `24x174761` 3.7-5.4 -> 3.0-3.4,
/// `28x149797` 4.0-4.6 -> 3.0-3.1, `32x120001` 3.4-4.1 -> 3.0-3.3,
/// `12x349525` 3.0-3.1 -> 2.4-2.5, `9x466033` 3.4-3.9 -> 2.7-2.8; only rows
/// of `2^k - 1` channels (4 bytes short of a power of two) ran one channel
/// per thread faster: `32x131071` 2.3-2.6 -> 2.9-3.3, `24x131071` 2.3-2.7
/// -> 3.1-3.2. Below 9 rows four-channel lanes were slower (`2x2097151`
/// 7.0-7.5 -> 7.4-9.4, `4x1048575` 4.5-4.7 -> 5.1-5.7, `8x524287`
/// 3.3-3.4 -> 3.4-4.4).
const ODD_FOUR_MIN_ROWS: usize = 9;
/// Storage buffers the column kernels bind at most (`backward_columns4`
/// and `backward_columns_rescue`: x, dy, terms, the rescue flag's
/// partials, grad_weight, grad_bias, dx).
pub(crate) const COLUMN_STORAGE_BUFFERS: u32 = 7;

/// How an op gathers its per-channel statistics (or gradient sums).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Strategy {
    /// Partial reductions over segments, a finalize step that merges
    /// them, then the elementwise pass: any layout, any size.
    Split,
    /// `(N, C)` with few rows, one chunk: one thread per four channels
    /// over all rows, the whole op in one dispatch (`columns4.wgsl`; a
    /// backward past `COLUMN_SMALL` values then `backward_columns_rescue`,
    /// see [`ExecPlan::column_inline_rescue`](super::ExecPlan::column_inline_rescue));
    /// `C % 4 == 0`, or other `C` from `ODD_FOUR_MIN_ROWS` rows with
    /// per-thread partials (CPU adapters), where the lanes are many enough
    /// to sweep (see [`ExecPlan::column_kernel`](super::ExecPlan::column_kernel): below
    /// `ODD_FOUR_BACKWARD_MIN_ROWS` rows only the training forward without
    /// a residual takes four channels per thread).
    Columns,
    /// `(N, C)` with few rows, other `C`, one chunk: one thread per
    /// channel over all rows, the whole op in one dispatch (and the
    /// rescue's, as for `Columns`), single values read and written
    /// (`columns.wgsl`).
    ColumnStats,
}

impl Strategy {
    /// The strategy for `layout` (in one chunk, on a device that binds
    /// `storage_buffers` per kernel; otherwise split): columns where there
    /// are few rows (256 on CPU adapters, which the merge model's per-thread
    /// partials stand for, and where the column kernels keep them in
    /// registers; on GPUs 16, or 32 for at least `COLUMN_GPU_WIDE_LANES`
    /// four-channel lanes) and enough lanes to fill a quarter of the
    /// merge model's target workgroups, or few values in all (one dispatch
    /// instead of three; at most 64 rows on GPUs), unless forced. There, partial states
    /// (16 bytes per channel per thread) and the finalize dispatch would
    /// cost more than the rows themselves.
    pub(super) fn of(
        layout: &Layout,
        merge: MergeModel,
        one_chunk: bool,
        storage_buffers: u32,
    ) -> Strategy {
        if !one_chunk || storage_buffers < COLUMN_STORAGE_BUFFERS {
            return Strategy::Split;
        }
        let vec4_lanes = layout.c.is_multiple_of(4);
        let fills = |candidate: Strategy| {
            let per_group = candidate.column_lanes(layout, merge) as usize;
            candidate.threads(layout, merge).div_ceil(per_group) * 4 >= merge.target_groups
        };
        // Other C: four-channel lanes where they would sweep (with the
        // rows' registers of per-thread partials; they do from 17 rows)
        // and fill the device (or the column kernels are forced on), else
        // one channel per thread (four times as many lanes).
        let odd_four = layout.n >= ODD_FOUR_MIN_ROWS
            && lanes_sweep(layout, merge.thread_partials)
            && (merge.columns == Some(true) || fills(Strategy::Columns));
        let candidate = if vec4_lanes || odd_four {
            Strategy::Columns
        } else {
            Strategy::ColumnStats
        };
        let lanes = candidate.lanes(layout.c);
        let fills = fills(candidate);
        let (rows, small_rows) = if merge.thread_partials {
            (COLUMN_MAX_ROWS, COLUMN_MAX_ROWS)
        } else if vec4_lanes && lanes >= COLUMN_GPU_WIDE_LANES {
            (COLUMN_GPU_WIDE_ROWS, COLUMN_GPU_SMALL_ROWS)
        } else {
            (COLUMN_GPU_ROWS, COLUMN_GPU_SMALL_ROWS)
        };
        let small = layout.numel() <= COLUMN_SMALL && layout.n <= small_rows;
        let wanted = merge
            .columns
            .unwrap_or((fills && layout.n <= rows) || small);
        if layout.l != 1 || layout.n > COLUMN_MAX_ROWS || !wanted {
            Strategy::Split
        } else {
            candidate
        }
    }

    /// Threads (with a lane or more each) per workgroup of the column
    /// kernels over `layout`: a whole workgroup where the threads fill a
    /// quarter of the merge model's target workgroups anyway, else fewer
    /// (at least 32), so that small inputs still spread over several
    /// workgroups (a CPU adapter runs each on one thread); counted as the
    /// `*_regs64_lanes` kernels' threads of four lanes where those may run
    /// ([`Strategy::threads`]). Tiny inputs where threads write their own
    /// partials (CPU adapters' merge model; at most 8 rows of at most a
    /// workgroup of lanes, at most `COLUMN_SMALL` values) take one
    /// workgroup of every lane (lavapipe, Zen 5, x a copy, three
    /// alternations: `8x512` training 1.48-2.08 -> 1.32-1.68, `2x512`
    /// 1.58-2.16 -> 1.26-1.59, `8x1024` 1.57-1.63 -> 1.38-1.50; backward
    /// alike), where a quarter of the target's workgroups of 32 live lanes
    /// ran mostly idle invocations. The workgroups have exactly these
    /// threads (`COLUMN_WG`, [`ExecPlan::column_grid`](super::ExecPlan::column_grid)).
    pub fn column_lanes(self, layout: &Layout, merge: MergeModel) -> u32 {
        let lanes = self.lanes(layout.c);
        let tiny = merge.thread_partials
            && layout.n <= COLUMN_SMALL_REG_ROWS
            && layout.numel() <= COLUMN_SMALL
            && lanes <= WG as usize;
        if tiny {
            return WG;
        }
        let per = self.threads(layout, merge) / (merge.target_groups / 4).max(1);
        per.next_power_of_two().clamp(32, WG as usize) as u32
    }

    /// The threads of the op's widest column kernel: its lanes, or a
    /// quarter of them where the `*_regs64_lanes` kernels (four lanes per
    /// thread) may run ([`regs64_lanes`]).
    pub fn threads(self, layout: &Layout, merge: MergeModel) -> usize {
        let lanes = self.lanes(layout.c);
        if self == Strategy::Columns && regs64_lanes(layout, Self::reg_rows(merge)) {
            lanes.div_ceil(COLUMN_REG_LANES_64)
        } else {
            lanes
        }
    }

    /// Workgroups of a column kernel's dispatch.
    pub fn column_groups(self, c: usize, column_lanes: u32) -> u32 {
        (self.lanes(c) as u32).div_ceil(column_lanes.max(1))
    }

    /// Rows up to which the column kernels may keep a lane's values in
    /// registers and read x (and dy) once (`ColumnRegs`): every row they
    /// take with per-thread partials (the merge model of CPU adapters,
    /// unless `Tuning::thread_partials` says otherwise: there the arrays
    /// are the thread's stack, which its cache holds, while a second read
    /// of rows a whole row apart costs far more: `64x65536` backward 76 ->
    /// 52 ms on lavapipe); none otherwise (on GPUs such arrays would live
    /// in local memory).
    pub fn reg_rows(merge: MergeModel) -> usize {
        if merge.thread_partials {
            COLUMN_MAX_ROWS
        } else {
            0
        }
    }

    /// The column kernels' entry points for `n` rows, within `reg_rows`:
    /// the smallest register arrays that hold them, except where the plain
    /// four-channel kernels keep them in registers already (8 rows).
    pub fn column_regs(self, n: usize, reg_rows: usize) -> ColumnRegs {
        if n > reg_rows || (self == Strategy::Columns && n <= COLUMN_SMALL_REG_ROWS) {
            ColumnRegs::Plain
        } else if n <= COLUMN_REGS_64 {
            ColumnRegs::Rows64
        } else {
            ColumnRegs::Rows256
        }
    }

    /// Lanes of the column kernels (threads of their dispatch).
    pub fn lanes(self, c: usize) -> usize {
        match self {
            Strategy::Columns => c.div_ceil(4),
            Strategy::Split | Strategy::ColumnStats => c,
        }
    }
}

/// Whether four-channel column lanes over `layout` sweep: where they keep
/// a lane's rows in registers (`registers`: per-thread partials, CPU
/// adapters), for rows of at least 256 channels, as the rows reductions
/// do, of more than `COLUMN_SMALL` values (small inputs stay in cache, and
/// a sweep keeps its idle lanes in its loops).
pub(super) fn lanes_sweep(layout: &Layout, registers: bool) -> bool {
    registers && layout.c.div_ceil(4) >= SWEEP_MIN_LANES && layout.numel() > COLUMN_SMALL
}

/// Whether the four-channel lanes of `layout` take the `*_regs64_lanes`
/// kernels (four lanes per thread) where they sweep: `C % 4 == 0`, lanes
/// that sweep with rows in registers (`reg_rows`: [`Strategy::reg_rows`]),
/// and the rows of the `*_regs64` entry points. The one rule behind both
/// the entry point ([`ExecPlan::column_regs`](super::ExecPlan::column_regs)) and the grid's threads
/// ([`Strategy::threads`]).
pub(super) fn regs64_lanes(layout: &Layout, reg_rows: usize) -> bool {
    layout.c.is_multiple_of(4)
        && lanes_sweep(layout, reg_rows > 0)
        && Strategy::Columns.column_regs(layout.n, reg_rows) == ColumnRegs::Rows64
}

/// The layout the kernels walk for `layout`: one channel's values are all
/// one run, so `(N, 1, L)` with `N * L % 4 == 0` becomes rows of a power
/// of two (at most 2^16) values, which the vec4 plane kernels take whatever
/// N and L are (a single huge row would leave each elementwise invocation
/// one vec4). Other layouts are their own.
pub(crate) fn canonical(layout: &Layout) -> Layout {
    let numel = layout.numel();
    if layout.c != 1 || !numel.is_multiple_of(4) {
        return *layout;
    }
    let l = 1usize << numel.trailing_zeros().min(16);
    Layout {
        n: numel / l,
        c: 1,
        l,
    }
}
