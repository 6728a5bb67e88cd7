//! The column kernels' choices for a planned op: which kernel (one or four
//! channels per thread) and which entry point (`ColumnRegs`) a training
//! forward, an eval forward or a backward takes, and their dispatch grid.

use super::strategy::{lanes_sweep, regs64_lanes, Strategy};
use super::strategy::{
    ColumnGrid, ColumnRegs, COLUMN_REGS_16, COLUMN_SMALL, COLUMN_SMALL_REG_ROWS,
};
use super::ExecPlan;

/// Rows from which a training forward's column kernel sweeps (three turns
/// of `SWEEP_ROWS`; see [`ExecPlan::column_regs`]).
const FORWARD_SWEEP_MIN_ROWS: usize = 17;
/// The same for a training forward that adds a residual: every row count
/// the register entry points take (past the plain kernel's 8).
const RESIDUAL_SWEEP_MIN_ROWS: usize = COLUMN_SMALL_REG_ROWS + 1;
/// Rows from which the backward and a training forward that adds a
/// residual take those lanes (below, one channel per thread was faster,
/// x a copy: backward `9x466033` 3.6-4.1 against 4.9-5.2, `16x250001`
/// 3.5-4.2 against 4.4-4.7; training + residual + ReLU `9x466033` 3.9-4.0
/// against 5.4-5.9, `16x250001` 4.2-4.4 against 4.6-4.8); from 17 rows
/// four-channel lanes sweep
/// (backward `32x131071` 6.9-7.3 -> 4.2-4.5, `64x65535` 6.0-6.8 ->
/// 4.1-4.6, `128x32767` 6.6-6.9 -> 4.4-4.6; training + residual + ReLU
/// `32x131071` 7.4-8.1 -> 4.1-4.5).
const ODD_FOUR_BACKWARD_MIN_ROWS: usize = FORWARD_SWEEP_MIN_ROWS;

/// The column kernel a plan's entry points are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnPass {
    /// A training forward, adding a residual or not.
    Forward {
        residual: bool,
    },
    Backward,
}

/// How a column kernel's threads own channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ColumnKernel {
    /// One channel per thread (`columns.wgsl`).
    PerChannel,
    /// Four channels per thread, `C % 4 == 0`: whole aligned vec4s
    /// (`columns4.wgsl` with `lanes4.wgsl`).
    Aligned4,
    /// Four channels per thread, other `C`: single values
    /// (`columns4.wgsl` with `lanes4_odd.wgsl`).
    Odd4,
}

impl ColumnKernel {
    /// The column strategy whose lanes the kernel has.
    fn lanes(self) -> Strategy {
        match self {
            ColumnKernel::PerChannel => Strategy::ColumnStats,
            ColumnKernel::Aligned4 | ColumnKernel::Odd4 => Strategy::Columns,
        }
    }
}

/// The column kernels' choices for a planned op.
impl ExecPlan {
    /// The column kernels' entry points (`ColumnRegs`) for a training
    /// forward or a backward, sweeping where [`ExecPlan::columns_sweep`],
    /// the forward only from `FORWARD_SWEEP_MIN_ROWS` rows (lavapipe, Zen
    /// 5: `16x262144` training forward 8.6-10.8 ms plain, 11.2-11.8 ms
    /// sweeping; its backward 20 -> 14 ms sweeping; `32x131072` forward
    /// 15.7-17.5 -> 9.8-10.3 ms), or from `RESIDUAL_SWEEP_MIN_ROWS` where it
    /// adds a residual: a SIMD group walking its lanes' rows alone then
    /// reads and writes three rows' streams a whole row apart, which took
    /// 15-37 ms for `16x262144`, `12x349524` and `10x419428` training +
    /// residual + ReLU, 15-18 ms sweeping. Where `C % 4 == 0` and the
    /// `*_regs64` kernels would sweep, `Rows64Lanes` (four lanes per
    /// thread) instead, or `Rows16Lanes` for up to `COLUMN_REGS_16` rows.
    pub fn column_regs(&self, pass: ColumnPass) -> ColumnRegs {
        let kernel = self.column_kernel(pass);
        let regs = kernel
            .lanes()
            .column_regs(self.layout.n, self.column_reg_rows as usize);
        let rows = match pass {
            ColumnPass::Backward => true,
            ColumnPass::Forward { residual: false } => self.layout.n >= FORWARD_SWEEP_MIN_ROWS,
            ColumnPass::Forward { residual: true } => self.layout.n >= RESIDUAL_SWEEP_MIN_ROWS,
        };
        if !(self.columns_sweep(kernel) && rows) {
            regs
        } else if kernel == ColumnKernel::Aligned4
            && regs64_lanes(&self.layout, self.column_reg_rows as usize)
        {
            if self.layout.n <= COLUMN_REGS_16 {
                ColumnRegs::Rows16Lanes
            } else {
                ColumnRegs::Rows64Lanes
            }
        } else {
            regs.swept()
        }
    }

    /// Whether a forward takes the column kernels: their strategy, except
    /// for running statistics (eval) of more than `COLUMN_SMALL` values on
    /// CPU adapters beyond the rows the plain kernels keep in registers,
    /// where the column kernel walks each lane's rows a whole row apart
    /// and `eval_prepare -> normalize` streams instead (recorded eval,
    /// GPU time on lavapipe, Zen 5: `64x65536` 16.6 ms in the column
    /// kernel, 6.6 ms in one that swept, 5.1 ms this way).
    pub fn forward_columns(&self, batch_stats: bool) -> bool {
        matches!(self.strategy, Strategy::Columns | Strategy::ColumnStats)
            && (batch_stats
                || self.column_reg_rows == 0
                || self.layout.n <= COLUMN_SMALL_REG_ROWS
                || self.layout.numel() <= COLUMN_SMALL)
    }

    /// Whether `kernel` takes its sweeping register entry points: the
    /// four-channel kernels where their lanes sweep ([`lanes_sweep`], with
    /// rows in registers); one channel per thread has no such entry points.
    pub fn columns_sweep(&self, kernel: ColumnKernel) -> bool {
        kernel != ColumnKernel::PerChannel && lanes_sweep(&self.layout, self.column_reg_rows > 0)
    }

    /// The column kernel of `pass` (eval: `Forward`): one channel per
    /// thread, or four (whole vec4s where `C % 4 == 0`); other `C` in four
    /// channels per thread except for the backward and a forward that
    /// adds a residual below `ODD_FOUR_BACKWARD_MIN_ROWS` rows, which one
    /// channel per thread does faster (with the plan's lanes per
    /// workgroup).
    pub fn column_kernel(&self, pass: ColumnPass) -> ColumnKernel {
        let plain_forward = pass == ColumnPass::Forward { residual: false };
        match self.strategy {
            Strategy::Columns if self.layout.c.is_multiple_of(4) => ColumnKernel::Aligned4,
            Strategy::Columns if !plain_forward && self.layout.n < ODD_FOUR_BACKWARD_MIN_ROWS => {
                ColumnKernel::PerChannel
            }
            Strategy::Columns => ColumnKernel::Odd4,
            Strategy::Split | Strategy::ColumnStats => ColumnKernel::PerChannel,
        }
    }

    /// Whether the column kernels' backward redoes gradient sums that came
    /// out non-finite itself (`INLINE_RESCUE` in `shaders/rescue_flag.wgsl`):
    /// inputs of at most `COLUMN_SMALL` values, which stay one dispatch
    /// (the rescue's own dispatch cost `8x512` and `32x20` 0.03 ms, a
    /// quarter of their backward on lavapipe, Zen 5). Larger ones raise
    /// the rescue flag and `backward_columns_rescue` (or `grads_rescue`)
    /// follows: the slow path's code in the kernel, even where not taken,
    /// cost their backward 10-30% on lavapipe (`2x2097152` 3.9-4.0x a copy
    /// without it, 5.5-6.0x with it).
    pub fn column_inline_rescue(&self) -> bool {
        self.layout.numel() <= COLUMN_SMALL
    }

    /// Workgroups of a dispatch of `kernel`'s entry point `regs`.
    pub fn column_groups(&self, kernel: ColumnKernel, regs: ColumnRegs) -> u32 {
        let per_thread = regs.lanes_per_thread() as u32;
        kernel
            .lanes()
            .column_groups(self.layout.c, self.column_lanes.saturating_mul(per_thread))
    }

    /// The dispatch of `kernel`'s entry point `regs`: its workgroups, of
    /// `column_lanes` threads each.
    pub fn column_grid(&self, kernel: ColumnKernel, regs: ColumnRegs) -> ColumnGrid {
        ColumnGrid {
            groups: self.column_groups(kernel, regs),
            threads: self.column_lanes,
        }
    }
}
