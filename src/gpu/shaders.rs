//! WGSL sources (`shaders/*.wgsl`, embedded with `include_str!`) and their
//! assembly into one module per kernel family, storage type and way of
//! combining a workgroup's threads.

use crate::types::DType;

/// `shaders/common.wgsl`: uniform block and helpers, in every module.
const COMMON: &str = include_str!("../../shaders/common.wgsl");
/// `shaders/moments.wgsl`: moment states (scaled Welford/Chan), for the
/// reductions and the finalize steps.
const MOMENTS: &str = include_str!("../../shaders/moments.wgsl");
/// `shaders/moments4.wgsl`: four channels' states, their loads and rows
/// folds (with every family that has `moments.wgsl`).
const MOMENTS4: &str = include_str!("../../shaders/moments4.wgsl");
/// `shaders/reduce.wgsl`: per-channel partial reductions.
const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
/// `shaders/reduce_rows.wgsl`: the four-channel rows reductions.
const REDUCE_ROWS: &str = include_str!("../../shaders/reduce_rows.wgsl");
/// `shaders/reduce_paired.wgsl`: the rows reductions with two lanes per
/// thread.
const REDUCE_PAIRED: &str = include_str!("../../shaders/reduce_paired.wgsl");
/// `shaders/reduce_sweep.wgsl`: the rows reductions' sweeps on CPU
/// adapters (after `reduce_rows.wgsl`).
const REDUCE_SWEEP: &str = include_str!("../../shaders/reduce_sweep.wgsl");
/// `shaders/reduce_tree.wgsl`: reduction entry points, shared-memory tree.
const REDUCE_TREE: &str = include_str!("../../shaders/reduce_tree.wgsl");
/// `shaders/reduce_subgroup.wgsl`: reduction entry points, subgroups first.
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/reduce_subgroup.wgsl");
/// `shaders/finalize.wgsl`: one thread per channel, or one workgroup per
/// channel (`*_finalize_groups`).
const FINALIZE: &str = include_str!("../../shaders/finalize.wgsl");
/// `shaders/rescue.wgsl`: the careful gradient sums' kernels after the
/// split reductions (with the finalize steps, after `finalize.wgsl`).
const RESCUE: &str = include_str!("../../shaders/rescue.wgsl");
/// `shaders/heads.wgsl`: each channel's first value, gathered where the
/// first row spans several bindings.
const HEADS: &str = include_str!("../../shaders/heads.wgsl");
/// `shaders/grads_careful.wgsl`: the gradient sums' slow path (sums that
/// overflowed f32, redone in scaled units).
const GRADS_CAREFUL: &str = include_str!("../../shaders/grads_careful.wgsl");
/// `shaders/rescue_flag.wgsl`: the `partials` binding and the flag the
/// summing kernels raise for the rescue kernels (careful sums).
const RESCUE_FLAG: &str = include_str!("../../shaders/rescue_flag.wgsl");
/// `shaders/epilogue.wgsl`: the fused epilogue of the normalize kernels.
const EPILOGUE: &str = include_str!("../../shaders/epilogue.wgsl");
/// `shaders/store4.wgsl`: the vec4 output (and residual) through it.
const STORE4: &str = include_str!("../../shaders/store4.wgsl");
/// `shaders/elementwise.wgsl`: normalize and grad_input.
const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
/// `shaders/columns.wgsl`: one thread per channel over all rows.
const COLUMNS: &str = include_str!("../../shaders/columns.wgsl");
/// `shaders/columns4.wgsl`: one thread per four channels, the whole op.
const COLUMNS4: &str = include_str!("../../shaders/columns4.wgsl");
/// `shaders/lanes4.wgsl`: the four-channel lanes' accessors for
/// `C % 4 == 0` (whole vec4s).
const LANES4: &str = include_str!("../../shaders/lanes4.wgsl");
/// `shaders/lanes4_odd.wgsl`: the same for other `C` (single values
/// written; x, dy and the residual read as shifted vec4 pairs).
const LANES4_ODD: &str = include_str!("../../shaders/lanes4_odd.wgsl");
/// `shaders/columns4_regs.wgsl`: the same with the rows in registers.
const COLUMNS4_REGS: &str = include_str!("../../shaders/columns4_regs.wgsl");
/// `shaders/columns4_lanes.wgsl`: the `*_regs64_lanes` kernels (C % 4 ==
/// 0), four lanes per thread.
const COLUMNS4_LANES: &str = include_str!("../../shaders/columns4_lanes.wgsl");
/// `shaders/dtype_f32.wgsl`: `alias elem = f32;`.
const DTYPE_F32: &str = include_str!("../../shaders/dtype_f32.wgsl");
/// `shaders/dtype_f16.wgsl`: `alias elem = f16;`.
#[cfg(feature = "f16")]
const DTYPE_F16: &str = include_str!("../../shaders/dtype_f16.wgsl");
/// `shaders/enable_f16.wgsl`: `enable f16;`, first in f16 modules.
#[cfg(feature = "f16")]
const ENABLE_F16: &str = include_str!("../../shaders/enable_f16.wgsl");

/// A kernel family: one WGSL module (one file after the prelude).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    /// Partial reductions, combining a workgroup's threads with a tree.
    ReduceTree,
    /// Partial reductions, combining subgroups first (`Features::SUBGROUP`).
    ReduceSubgroup,
    /// Per-channel finalize steps.
    Finalize,
    /// Normalize and grad_input.
    Elementwise,
    /// Statistics (or gradient sums) by one thread per channel.
    Columns,
    /// The whole op by one thread per four channels, `C % 4 == 0`.
    Columns4,
    /// The same for other `C`, each value read and written on its own.
    Columns4Odd,
}

impl Family {
    /// Every family, for tests that compile them all.
    #[cfg(test)]
    pub const ALL: [Family; 7] = [
        Family::ReduceTree,
        Family::ReduceSubgroup,
        Family::Finalize,
        Family::Elementwise,
        Family::Columns,
        Family::Columns4,
        Family::Columns4Odd,
    ];

    /// Short name for labels.
    pub fn name(self) -> &'static str {
        match self {
            Family::ReduceTree => "reduce",
            Family::ReduceSubgroup => "reduce-subgroup",
            Family::Finalize => "finalize",
            Family::Elementwise => "elementwise",
            Family::Columns => "columns",
            Family::Columns4 => "columns4",
            Family::Columns4Odd => "columns4-odd",
        }
    }

    /// The files after the prelude, in order.
    fn body(self) -> &'static [&'static str] {
        match self {
            Family::ReduceTree => &[
                MOMENTS,
                MOMENTS4,
                REDUCE,
                REDUCE_ROWS,
                REDUCE_PAIRED,
                REDUCE_SWEEP,
                REDUCE_TREE,
            ],
            Family::ReduceSubgroup => &[
                MOMENTS,
                MOMENTS4,
                REDUCE,
                REDUCE_ROWS,
                REDUCE_PAIRED,
                REDUCE_SWEEP,
                REDUCE_SUBGROUP,
            ],
            Family::Finalize => &[
                MOMENTS,
                MOMENTS4,
                GRADS_CAREFUL,
                RESCUE_FLAG,
                FINALIZE,
                RESCUE,
                HEADS,
            ],
            Family::Elementwise => &[EPILOGUE, STORE4, ELEMENTWISE],
            Family::Columns => &[
                MOMENTS,
                MOMENTS4,
                GRADS_CAREFUL,
                RESCUE_FLAG,
                FINALIZE,
                EPILOGUE,
                COLUMNS,
            ],
            Family::Columns4 => &[
                MOMENTS,
                MOMENTS4,
                GRADS_CAREFUL,
                RESCUE_FLAG,
                EPILOGUE,
                STORE4,
                LANES4,
                COLUMNS4,
                COLUMNS4_REGS,
                COLUMNS4_LANES,
            ],
            Family::Columns4Odd => &[
                MOMENTS,
                MOMENTS4,
                GRADS_CAREFUL,
                RESCUE_FLAG,
                EPILOGUE,
                LANES4_ODD,
                COLUMNS4,
                COLUMNS4_REGS,
            ],
        }
    }
}

/// The complete WGSL module of `family` for tensors of `dtype`:
/// `enable f16;` where needed, the storage-type alias, the shared prelude,
/// then the family's files. (wgpu's WGSL front end gates subgroup
/// operations on the device feature, with no `enable`.)
pub(crate) fn module_source(family: Family, dtype: DType) -> String {
    let mut src = String::new();
    match dtype {
        DType::F32 => src.push_str(DTYPE_F32),
        #[cfg(feature = "f16")]
        DType::F16 => {
            src.push_str(ENABLE_F16);
            src.push_str(DTYPE_F16);
        }
    }
    src.push_str(COMMON);
    for part in family.body() {
        src.push_str(part);
    }
    src
}

#[cfg(test)]
mod binding_tests;
#[cfg(test)]
mod tests;
