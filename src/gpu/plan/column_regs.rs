//! The column kernels' entry points by the rows they keep in registers
//! ([`ColumnRegs`]), and the lanes each of their threads takes.

/// Consecutive four-channel lanes each thread of the `*_regs64_lanes`
/// entry points takes (`REG_LANES_64`; see
/// [`ColumnRegs::lanes_per_thread`]).
pub(crate) const COLUMN_REG_LANES_64: usize = 4;
/// Rows the `*_regs16_lanes` entry points keep in registers
/// (`REG_ROWS_16`).
pub(crate) const COLUMN_REGS_16: usize = 16;

/// Which entry points the column kernels take (the training forward and
/// the backward; eval reads x once anyway): the plain ones, or those that
/// keep up to 64 or 256 rows of a lane in registers (`*_regs64`,
/// `*_regs256`: WGSL zero-fills a function's arrays, so each size is its
/// own entry point). The four-channel kernels' register entry points also
/// come sweeping (`*_sweep`, `Rows64Sweep` and `Rows256Sweep`: see
/// `SWEEP_ROWS` in `shaders/common.wgsl`), and for `C % 4 == 0` up to 64
/// rows sweeping with four lanes per thread (`*_regs64_lanes`,
/// `Rows64Lanes`: see [`ColumnRegs::lanes_per_thread`]; up to
/// [`COLUMN_REGS_16`] rows in arrays of that many, `*_regs16_lanes`,
/// `Rows16Lanes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ColumnRegs {
    Plain,
    Rows64,
    Rows256,
    Rows64Sweep,
    Rows256Sweep,
    Rows64Lanes,
    Rows16Lanes,
}

impl ColumnRegs {
    /// The entry point's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            ColumnRegs::Plain => "",
            ColumnRegs::Rows64 => "_regs64",
            ColumnRegs::Rows256 => "_regs256",
            ColumnRegs::Rows64Sweep => "_regs64_sweep",
            ColumnRegs::Rows256Sweep => "_regs256_sweep",
            ColumnRegs::Rows64Lanes => "_regs64_lanes",
            ColumnRegs::Rows16Lanes => "_regs16_lanes",
        }
    }

    /// Lanes each thread of the entry point takes: the `*_regs64_lanes`
    /// kernels (`shaders/columns4_lanes.wgsl`) take
    /// [`COLUMN_REG_LANES_64`] consecutive lanes, so that a SIMD group of a
    /// CPU adapter reads 8 * 64 contiguous bytes of each row instead of
    /// 128 before the next row; every other entry point one lane.
    pub fn lanes_per_thread(self) -> usize {
        match self {
            ColumnRegs::Rows64Lanes | ColumnRegs::Rows16Lanes => COLUMN_REG_LANES_64,
            _ => 1,
        }
    }

    /// The same entry point sweeping, where it has such a form.
    pub fn swept(self) -> Self {
        match self {
            ColumnRegs::Rows64 => ColumnRegs::Rows64Sweep,
            ColumnRegs::Rows256 => ColumnRegs::Rows256Sweep,
            other => other,
        }
    }
}

/// A column kernel's dispatch: its workgroups and the threads of each
/// (the `COLUMN_WG` pipeline constant of the column entry points:
/// `ExecPlan::column_lanes`, so no invocation of a workgroup is without a
/// lane; `backward_columns_rescue` keeps `WG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColumnGrid {
    pub groups: u32,
    pub threads: u32,
}
