//! How the finalize steps merge each channel's partial states: a thread
//! per channel, or a workgroup per channel (`*_finalize_groups` in
//! `shaders/finalize.wgsl`).

use super::ExecPlan;

/// Partial states per channel from which GPUs merge them with a workgroup
/// per channel ([`ExecPlan::finalize_groups`]).
const FINALIZE_GROUP_STATES: usize = 64;
/// Channels up to which GPUs merge with a workgroup per channel.
const FINALIZE_GROUP_MAX_C: usize = 8192;
/// The same where threads write their own partials (CPU adapters): fewer
/// channels than a SIMD group's lanes left one thread, in a SIMD group of
/// mostly idle lanes, merging thousands of states in turn (`4194304x1`:
/// 4096), while a workgroup merges them a SIMD group at a time and then
/// in a tree of 8 barriers (lavapipe, Zen 5, six alternations, training x
/// a copy: `4194304x1` 1.63 -> 1.57, `1x1x4194304` 1.65 -> 1.58; backward
/// within noise; `1x64x65536` unchanged). For 16 or 64 channels it was
/// within noise (three alternations, `262144x16`, `65536x64`).
const FINALIZE_GROUP_CPU_MAX_C: usize = 8;
/// Values per channel from which CPU adapters merge with a workgroup per
/// channel ([`ExecPlan::finalize_groups`]).
const FINALIZE_GROUP_CPU_MIN_VALUES: usize = 1 << 16;

/// Partial states per channel up to which one thread may merge them on
/// any adapter: Mesa's llvmpipe (lavapipe, llvmpipe's GL) ends every loop
/// of an invocation once it has run 65535 iterations in all, about six
/// per state here (one thread merging 12288 rows stopped after about
/// 11000, silently); past this, a workgroup per channel merges them,
/// WG threads each taking every WG-th row. The plan keeps the states per
/// channel within `WG` times this (`MAX_MERGE_STATES` in `plan.rs`).
pub(crate) const THREAD_MERGE_MAX_STATES: usize = 2048;

impl ExecPlan {
    /// Whether the finalize steps merge each channel's partial states with
    /// a workgroup per channel (`*_finalize_groups` in
    /// `shaders/finalize.wgsl`) rather than a thread: where a channel has
    /// at least `FINALIZE_GROUP_STATES` states and there are at most
    /// `FINALIZE_GROUP_MAX_C` channels without per-thread partials (GPUs;
    /// more channels keep a GPU busy with a thread each, and a workgroup
    /// each would be mostly idle), or `FINALIZE_GROUP_CPU_MAX_C` with them
    /// (CPU adapters) and at least `FINALIZE_GROUP_CPU_MIN_VALUES` values
    /// per channel (every thread has a row of states there, most of them
    /// empty in small inputs).
    /// Past `THREAD_MERGE_MAX_STATES` states per channel, always.
    pub fn finalize_groups(&self) -> bool {
        let per_channel = self.partial_rows as usize * self.folds();
        if per_channel > THREAD_MERGE_MAX_STATES {
            return true;
        }
        let states = per_channel >= FINALIZE_GROUP_STATES;
        if self.thread_partials {
            states
                && self.layout.c <= FINALIZE_GROUP_CPU_MAX_C
                && self.layout.per_channel() >= FINALIZE_GROUP_CPU_MIN_VALUES
        } else {
            states && self.layout.c <= FINALIZE_GROUP_MAX_C
        }
    }
}
