//! Workgroup grids of the dispatches, and the windows of the careful
//! gradient walk (`grads_rescue`), whose grid and partial-buffer room
//! they decide.

use super::finalize::THREAD_MERGE_MAX_STATES;
use super::reduce::MAX_THREAD_UNITS;
use super::{ExecPlan, WG};

/// Splits `groups` workgroups over a 2-D grid within the per-dimension
/// limit (`plan_exec` keeps every dispatch within `max_dim^2` groups).
pub(crate) fn grid(groups: u32, max_dim: u32) -> (u32, u32) {
    let groups = groups.max(1);
    let max_dim = max_dim.max(1);
    if groups <= max_dim {
        return (groups, 1);
    }
    let gy = groups.div_ceil(max_dim);
    (groups.div_ceil(gy), gy)
}

/// Workgroups for one thread per channel.
pub(crate) fn channel_groups(c: usize) -> u32 {
    (c as u32).div_ceil(WG)
}

/// Workgroups of the rescue kernels (`grads_rescue`, `grads_rescue_finish`):
/// one thread per channel up to `RESCUE_GROUPS` workgroups, whose threads
/// then take channels a grid apart (their work is one load per thread
/// where no sum needs the rescue, whatever C).
pub(crate) fn rescue_groups(c: usize) -> u32 {
    channel_groups(c).min(RESCUE_GROUPS)
}

/// At most this many workgroups per rescue dispatch (unless the windows
/// need more: [`rescue_window_groups`]).
pub(crate) const RESCUE_GROUPS: u32 = 64;

/// Values of a channel one invocation of `grads_rescue` walks: this many
/// per window (more only where a chunk's channel would need more than
/// `MAX_RESCUE_WINDOWS` of them: more than 2^26 values of a channel in a
/// chunk, past lavapipe's 128 MiB bindings, so on GPUs;
/// [`ExecPlan::rescue_split`]).
pub(crate) const RESCUE_WINDOW: usize = 2048;

/// (channel, window) items each thread of `grads_rescue` takes at most:
/// with about three loop iterations per value (a row's run of one value
/// costs its inner loop two), four windows stay near 25000 iterations,
/// well within llvmpipe's 65535 per invocation.
const RESCUE_ITEMS_PER_THREAD: usize = 4;

/// Workgroups of `grads_rescue` over `items` (channel, window) pairs: as
/// [`rescue_groups`], or more where its threads would take more than
/// `RESCUE_ITEMS_PER_THREAD` items each.
pub(crate) fn rescue_window_groups(items: usize) -> u32 {
    let needed = items.div_ceil(WG as usize * RESCUE_ITEMS_PER_THREAD);
    rescue_groups(items).max(u32::try_from(needed).unwrap_or(u32::MAX))
}

/// Workgroups for one invocation per vec4 of `count` elements.
pub(crate) fn vec4_groups(count: usize) -> u32 {
    (count.div_ceil(4) as u32).div_ceil(WG)
}

/// Windows of a chunk's careful walk the merge adds per channel at most
/// (one loop iteration each, within llvmpipe's 65535).
pub(crate) const MAX_RESCUE_WINDOWS: usize = 32_768;

impl ExecPlan {
    /// Checks that no invocation of the plan's kernels loops past a bound
    /// well within the 65535 loop iterations Mesa's llvmpipe (lavapipe,
    /// llvmpipe's GL) runs per invocation before it ends every loop
    /// silently: each reduction thread's units (`MAX_THREAD_UNITS`), a
    /// finalize thread's partial states (`THREAD_MERGE_MAX_STATES`, with a
    /// workgroup per channel past it), the careful walk's windows. The
    /// planner keeps them for every shape up to 2 GiB at lavapipe's 128 MiB
    /// bindings (`loop_tests`); a layout it cannot (rows far longer than a
    /// tiny binding the application asked for) is an error, never a silent
    /// cut. Only where the adapter caps loops
    /// (`DeviceLimits::bounded_loops`: CPU adapters); elsewhere longer
    /// walks just take longer.
    pub(super) fn check_loops(&self) -> Result<(), String> {
        for (k, ch) in self.chunks.iter().enumerate() {
            let r = &ch.reduce;
            let units = (r.seg_len as usize).div_ceil(r.threads_per_lane.max(1) as usize);
            if units > MAX_THREAD_UNITS {
                return Err(format!(
                    "{:?}: a reduction thread would walk {units} units of chunk {k}",
                    self.layout
                ));
            }
            let (window, _) = self.rescue_split(k);
            if window > RESCUE_WINDOW {
                return Err(format!(
                    "{:?}: chunk {k}'s careful walk needs windows of {window} values",
                    self.layout
                ));
            }
        }
        let states = self.partial_rows as usize * self.folds();
        let per_thread = if self.finalize_groups() {
            states.div_ceil(WG as usize)
        } else {
            states
        };
        if per_thread > THREAD_MERGE_MAX_STATES {
            return Err(format!(
                "{:?}: {states} partial states per channel; use larger storage bindings",
                self.layout
            ));
        }
        Ok(())
    }

    /// The vec4 in the partials buffer after the partial states and the
    /// rescue's sums (two vec4s per channel carried between chunks, then,
    /// where a chunk has more than one, two per channel and window of a
    /// chunk, [`ExecPlan::rescue_windows`]):
    /// the flag the kernels that sum gradients (`grads_finalize`, the
    /// column kernels) raise where a channel's sums need the rescue.
    pub fn rescue_flag(&self) -> usize {
        // Chunks of one window a channel add it to the carried sums at
        // once: no room for windows.
        let windows = (0..self.chunks.len())
            .map(|k| self.rescue_windows(k))
            .filter(|&w| w > 1)
            .max();
        let sums = 2 * self.layout.c * (1 + windows.unwrap_or(0));
        self.partial_count().max(sums)
    }

    /// Windows of chunk `k`'s careful gradient walk per channel
    /// ([`ExecPlan::rescue_split`]).
    pub fn rescue_windows(&self, k: usize) -> usize {
        self.rescue_split(k).1
    }

    /// Chunk `k`'s careful gradient walk per channel (`careful_window` in
    /// `shaders/grads_careful.wgsl`): values per window and windows. The
    /// channel's values inside the chunk are walked in order, run after run
    /// across rows, a window's worth at a time. A window is one
    /// invocation's walk (Mesa's llvmpipe, lavapipe's and GL's, ends
    /// every loop of an invocation once it has run 65535 iterations in
    /// all: one thread per channel over a chunk summed 21845 rows and
    /// silently stopped). `RESCUE_WINDOW` values, or, where a chunk's
    /// channel would need more than `MAX_RESCUE_WINDOWS` windows (the
    /// merge adds them in one loop), a power-of-two multiple of it.
    pub fn rescue_split(&self, k: usize) -> (usize, usize) {
        let Some(ch) = self.chunks.get(k) else {
            return (RESCUE_WINDOW, 0);
        };
        // A channel's values inside the chunk: at most its runs over the
        // rows the chunk overlaps, and at most the chunk.
        let values = ch.layout.n.saturating_mul(ch.layout.l).min(ch.count);
        let windows = |e: usize| values.div_ceil(e);
        let mut window = RESCUE_WINDOW;
        while windows(window) > MAX_RESCUE_WINDOWS {
            window *= 2;
        }
        (window, windows(window))
    }
}
