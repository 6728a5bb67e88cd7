//! Workgroup grids of the dispatches, and the windows of the careful
//! gradient walk (`grads_rescue`), whose grid and partial-buffer room
//! they decide.

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

/// Values of a channel one invocation of `grads_rescue` walks at most
/// (`RESCUE_WINDOW` in `shaders/grads_careful.wgsl`; see
/// [`ExecPlan::rescue_windows`]).
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

impl ExecPlan {
    /// The vec4 in the partials buffer after the partial states and the
    /// rescue's sums (two vec4s per channel carried between chunks, then
    /// two per channel and window of a chunk, [`ExecPlan::rescue_windows`]):
    /// the flag the kernels that sum gradients (`grads_finalize`, the
    /// column kernels) raise where a channel's sums need the rescue.
    pub fn rescue_flag(&self) -> usize {
        let windows = (0..self.chunks.len()).map(|k| self.rescue_windows(k)).max();
        let sums = 2 * self.layout.c * (1 + windows.unwrap_or(0));
        self.partial_count().max(sums)
    }

    /// Windows of chunk `k`'s careful gradient walk per channel
    /// (`rescue_windows` in `shaders/grads_careful.wgsl`): rows of at most
    /// `RESCUE_WINDOW` values of a channel, or pieces of that many of a
    /// longer row. A window is one invocation's walk, so that none runs
    /// past `RESCUE_WINDOW` values (Mesa's llvmpipe, lavapipe's and GL's,
    /// ends every loop of an invocation once it has run 65535 iterations in
    /// all: one thread per channel over a chunk summed 21845 rows and
    /// silently stopped).
    pub fn rescue_windows(&self, k: usize) -> usize {
        let Some(ch) = self.chunks.get(k) else {
            return 0;
        };
        let (n, l) = (ch.layout.n, ch.layout.l.max(1));
        if l > RESCUE_WINDOW {
            n * l.div_ceil(RESCUE_WINDOW)
        } else {
            n.div_ceil(RESCUE_WINDOW / l)
        }
    }
}
