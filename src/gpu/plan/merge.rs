//! How reduction threads merge their states and how many workgroups a
//! reduction aims for, chosen per adapter.

use super::Variant;

/// A reduction pass on a GPU aims for about this many workgroups.
const GPU_TARGET_GROUPS: usize = 512;
/// The rows reductions (`Rows`, `OddRows`: several channels per thread) on
/// a GPU aim for half as many, each thread folding twice the rows before
/// its workgroup merges four channels' states per lane, the merge being
/// the larger cost there (H100, per-dispatch timestamps: the moment pass
/// of `262144x16` 29.4 -> 23.7 us, of `1398101x3` 32.0 -> 26.7 us; 128
/// was slower again, and the one-channel planes were slower at 256).
const GPU_ROWS_TARGET_GROUPS: usize = 256;
/// Tiles up to which the rows target applies (1024 channels, or virtual
/// channels, at 64 lanes of four per workgroup: `4096x1024` was the widest
/// measured).
const ROWS_TARGET_MAX_TILES: usize = 4;
/// How reduction threads merge their states, chosen per adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MergeModel {
    /// Reduction passes aim for about this many workgroups.
    pub target_groups: usize,
    /// The same for the rows reductions (`Variant::Rows`, `OddRows`).
    pub rows_target_groups: usize,
    /// Threads may write their own partial states (no barriers).
    pub thread_partials: bool,
    /// Column kernels: `None` where they fill the device, `Some` forced.
    pub columns: Option<bool>,
}

impl MergeModel {
    /// Few workgroups and per-thread partials on CPU adapters (which run a
    /// few workgroups at a time and pay for every barrier); about 512
    /// workgroups merging their threads elsewhere (256 for the rows
    /// reductions of up to 1024 channels). See BENCHMARKS.md.
    pub fn for_adapter(device_type: Option<wgpu::DeviceType>, thread_partials: bool) -> Self {
        let target_groups = match device_type {
            Some(wgpu::DeviceType::Cpu) => std::thread::available_parallelism()
                .map_or(4, |n| n.get())
                .saturating_mul(4)
                .clamp(16, GPU_TARGET_GROUPS),
            _ => GPU_TARGET_GROUPS,
        };
        let rows_target_groups = match device_type {
            Some(wgpu::DeviceType::Cpu) => target_groups,
            _ => GPU_ROWS_TARGET_GROUPS,
        };
        Self {
            target_groups,
            rows_target_groups,
            thread_partials,
            columns: None,
        }
    }

    /// The workgroups a reduction of `variant` over `tiles` tiles (of
    /// lanes) aims for: the rows target up to `ROWS_TARGET_MAX_TILES`
    /// tiles, where it was measured; wider rows keep the usual target,
    /// and with it their finalize's form (a workgroup per channel from 64
    /// partial states on GPUs).
    pub fn groups_for(&self, variant: Variant, tiles: usize) -> usize {
        match variant {
            Variant::Rows | Variant::OddRows if tiles <= ROWS_TARGET_MAX_TILES => {
                self.rows_target_groups
            }
            _ => self.target_groups,
        }
    }

    /// The same with the column kernels forced on or off.
    pub fn with_columns(self, columns: Option<bool>) -> Self {
        Self { columns, ..self }
    }
}
