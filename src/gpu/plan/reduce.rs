//! How a per-channel reduction is split over workgroups (`ReducePlan`,
//! `plan_reduce`), and its paired-lane form on CPU adapters.

use super::{Layout, Variant, WG};

/// A reduction thread folds at least this many values before merging.
const MIN_VALUES_PER_THREAD: usize = 8;
/// Units a thread folds at least where threads write their own partial
/// states (CPU adapters), as far as the lanes have them: fewer,
/// longer shares in small and mid-sized inputs, whose states outweighed
/// their data (lavapipe, Zen 5, per-dispatch: `2048x64` moment partials
/// 0.55 -> 0.20 ms and their finalize 0.61 -> 0.16 ms, `8192x64` 0.88 ->
/// 0.53 and 0.79 -> 0.31; 16 MiB inputs unchanged).
pub(crate) const THREAD_MIN_UNITS: usize = 64;
/// Upper bound on reduction segments per channel (the finalize steps merge
/// them, one thread or, on GPUs, one workgroup per channel).
const MAX_SEGMENTS: usize = 1024;
/// Units a reduction thread walks at most (`thread_run_len` in
/// `shaders/reduce.wgsl`; its careful pass walks them again): Mesa's
/// llvmpipe (lavapipe, llvmpipe's GL) ends every loop of an invocation
/// once it has run 65535 iterations in all, silently. Inputs with more
/// units per lane than this times the lane's threads take more segments
/// (rows longer than a chunk, each chunk walking the units of the whole
/// rows it overlaps: `(1, 3, 2^28)` f16 took 65537 a thread).
pub(crate) const MAX_THREAD_UNITS: usize = 8192;
/// Lanes per workgroup of the rows reductions at most.
const MAX_LANES_PER_GROUP: usize = 64;
/// How a per-channel reduction is split over workgroups: each workgroup
/// covers `lanes_per_group` lanes (channels, or four-channel vec4s in
/// [`Variant::Rows`]) with `threads_per_lane` threads each, over one of
/// `segments` stretches of each lane's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReducePlan {
    pub lanes_per_group: u32,
    pub threads_per_lane: u32,
    pub tiles: u32,
    pub segments: u32,
    pub seg_len: u32,
    /// Each thread takes two four-channel lanes, `q` and `q + 8`, so that a
    /// SIMD group of eight invocations reads 256 contiguous bytes of every
    /// row (see [`ReducePlan::paired`]); a workgroup then covers
    /// `2 * lanes_per_group` lanes.
    pub paired: bool,
    /// The threads sweep their rows (the `*_rows_sweep` entry points,
    /// per-thread partials only): CPU adapters run a workgroup's invocations a SIMD
    /// group at a time, each through its whole loop until a barrier, so
    /// where each thread walks its rows a whole row apart, one group
    /// strides through all of its rows before the next reads the
    /// neighbouring bytes of the same rows. With a barrier every
    /// `SWEEP_ROWS` rows (`shaders/common.wgsl`) the groups take turns and
    /// the workgroup reads each row's stretch front to back.
    pub sweep: bool,
}

/// Four-channel lanes from which the rows reductions on CPU adapters sweep
/// instead of pairing lanes (`C >= 256`; A/B on lavapipe, Zen 5: training
/// forward `16384x256` 16.0 -> 11.5 ms, `4096x1024` 15.5 -> 11.0 ms;
/// `65536x64` paired 10.3, swept 11.6-12.3).
pub(super) const SWEEP_MIN_LANES: usize = 64;
/// Four-channel lanes from which the rows reductions on CPU adapters pair
/// lanes (`C >= 64`; A/B on lavapipe: the gradient sums of `(4096, 1024)`
/// 50 -> 38 ms, those of `(262144, 16)` unchanged).
pub(super) const PAIRED_MIN_LANES: usize = 16;
/// Lanes between a thread's two paired lanes (`PAIR_GAP` in
/// `shaders/reduce_paired.wgsl`): a paired workgroup needs at least this
/// many lanes per group, or lanes of the next tile would be taken.
pub(crate) const PAIR_GAP: u32 = 8;

impl ReducePlan {
    /// Workgroups of the partial pass.
    pub fn groups(&self) -> u32 {
        self.tiles * self.segments
    }

    /// Lanes one workgroup covers.
    #[cfg(test)]
    pub fn lanes_per_tile(&self) -> u32 {
        self.lanes_per_group * if self.paired { 2 } else { 1 }
    }

    /// The same split with at least `min` of a lane's `units` per thread
    /// where the lane has them: fewer segments, so fewer partial states
    /// (per-thread partials: a row of states per thread) to write and to
    /// merge. Within the segments: the same lanes and threads.
    pub(super) fn thicker(self, units: usize, min: usize) -> Self {
        let threads = self.threads_per_lane.max(1) as usize;
        // Whole shares of `min` per thread: each segment but the last
        // then has at least `threads * min` units (seg_len rounds up; the
        // last holds what is left, possibly less).
        let max_segments = (units / (threads * min.max(1))).max(1);
        if self.segments as usize <= max_segments {
            return self;
        }
        let seg_len = units.max(1).div_ceil(max_segments);
        Self {
            segments: units.max(1).div_ceil(seg_len) as u32,
            seg_len: seg_len as u32,
            ..self
        }
    }

    /// The same split with each thread taking two lanes eight apart: half
    /// the lanes per workgroup's threads, twice the threads per lane, the
    /// same tiles and segments. CPU adapters run a workgroup's invocations
    /// a SIMD group (eight on AVX2) at a time, each through its whole share:
    /// with one lane per thread a group reads 128 bytes of each row and
    /// strides a whole row to the next, which is slow once rows are much
    /// longer than that; two lanes make it 256 contiguous bytes per row.
    /// Only for per-thread partials (`THREAD_PARTIALS`), where threads do
    /// not merge through workgroup memory.
    pub(super) fn paired(self) -> Self {
        Self {
            lanes_per_group: self.lanes_per_group / 2,
            threads_per_lane: self.threads_per_lane * 2,
            paired: true,
            ..self
        }
    }
}

/// Chooses the reduction split for `layout` in `variant`, with at most
/// `max_groups` workgroups and about `target` of them.
pub(crate) fn plan_reduce(
    layout: &Layout,
    variant: Variant,
    max_groups: usize,
    target: usize,
) -> ReducePlan {
    split(
        layout,
        variant,
        (max_groups, target),
        (MAX_LANES_PER_GROUP, 1),
    )
}

/// Planes (`Variant::Planes`) of at least this many values spread a
/// reduction workgroup over several channels on CPU adapters
/// ([`plan_spread`]).
const SPREAD_MIN_L: usize = 1024;
/// Planes of this many channels or more spread too, whatever their
/// length: one workgroup per channel would make C workgroups, each with
/// its own 256 partial states per channel (lavapipe, Zen 5, per-dispatch
/// timestamps, training forward: `8x2048x256` 24.4-25.2 -> 7.6-10.6 ms,
/// `32x512x256` 9.8-10.2 -> 6.8-7.0, `64x256x256` 9.0-9.5 -> 6.5,
/// `128x128x256` 7.1 -> 6.6-7.0; `1024x256x16` 8.3-9.5 -> 6.3-6.5 there
/// but within noise as a whole op in the bench; masked runs:
/// `32x2048x49` 23.5-24.1 -> 7.0-7.4, `128x512x49` 8.1-8.9 -> 5.4-6.4,
/// backward `2048x128x15` 17.9-18.2 -> 14.2-16.0).
const SPREAD_MIN_C: usize = 128;
/// Channels per workgroup there at most (fewer where C is smaller: the
/// next power of two).
const SPREAD_LANES: usize = 8;

/// Planes with fewer vec4s per channel than this spread whatever their
/// length and channels: one channel per workgroup gave each thread of a
/// small input a few vec4s and its own partial state, as many states as
/// a quarter of the data, merged by one thread per channel (lavapipe,
/// Zen 5, per-dispatch, moment partials / their finalize: `256x64x16`
/// 0.32-0.33 -> 0.19 ms / 0.26 -> 0.06-0.07, `64x64x64` 0.31-0.33 -> 0.20
/// / 0.27-0.28 -> 0.07-0.11, `128x32x64` 0.25-0.26 -> 0.17-0.19 /
/// 0.16-0.19 -> 0.06-0.08; gradient partials 0.43-0.49 -> 0.25-0.30;
/// `2048x64x64`, past the bound, unchanged; whole ops, x a copy, near
/// the bound: `1000x64x64` training 2.79-3.40 -> 2.46-2.70, backward
/// 7.05-7.36 -> 4.14-4.89). A whole workgroup of threads, each folding
/// `THREAD_MIN_UNITS`.
const SPREAD_MAX_SMALL_UNITS: usize = WG as usize * THREAD_MIN_UNITS;
/// The same for masked runs (from `SPREAD_MASKED_MIN_L`), in masked vec4
/// units a channel: moment partials `64x64x49` 0.46 -> 0.23-0.25 ms,
/// `16x64x101` 0.36-0.38 -> 0.18-0.20, gradient partials 0.65-0.68 ->
/// 0.33-0.34 and 0.45-0.51 -> 0.22-0.26; whole ops, x a copy: training
/// `64x64x49` 2.68-4.77 -> 1.56-2.07, backward 3.55-4.14 -> 2.17-2.51;
/// `1024x64x49` (13312 units) was slower spread, training 2.29-2.69 ->
/// 3.02-3.08.
const SPREAD_MASKED_MAX_SMALL_UNITS: usize = WG as usize * 16;
/// Masked runs shorter than this spread whatever their channels: a
/// thread's short runs a whole row apart then lie next to its SIMD group's
/// (lavapipe, Zen 5, per-dispatch: backward `65536x3x21` 15.2-16.1 ->
/// 11.7-12.0 ms, `4096x64x15` 18.1-18.6 -> 12.9-13.9, `16384x16x13`
/// 14.3-15.1 -> 10.9-11.6; whole ops, x a copy: `65536x3x21` training
/// forward 2.52-2.62 -> 1.96-2.02, backward 4.02-4.30 -> 2.95-3.11; runs
/// of 31 were mixed, `2048x64x31` training 7% slower, backward 10%
/// faster; longer runs of few channels were slower: `1024x64x49` backward
/// 10.0-10.2 -> 11.2-11.6 ms, `8x3x174763` 10.6-11.2 -> 11.7-12.9).
const SPREAD_MASKED_MAX_L: usize = 24;

/// Masked runs (odd L, or L % 4 == 2) shorter than this do not spread:
/// the masked reductions take them only where the virtual rows do not fit
/// (chunked tensors, or virtual rows too wide: many channels), and they
/// were not measured spread.
const SPREAD_MASKED_MIN_L: usize = 12;

/// Whether a reduction of `layout` in `variant` spreads where threads
/// write their own partials (CPU adapters' default, or
/// `Tuning::thread_partials`; [`plan_spread`]): planes of at least
/// `SPREAD_MIN_L` values, planes or masked runs of at least `SPREAD_MIN_C`
/// channels or of few vec4s a channel (`SPREAD_MAX_SMALL_UNITS`,
/// `SPREAD_MASKED_MAX_SMALL_UNITS`), and masked runs shorter than
/// `SPREAD_MASKED_MAX_L`.
pub(super) fn spreads(layout: &Layout, variant: Variant) -> bool {
    match variant {
        Variant::Planes => {
            layout.l >= SPREAD_MIN_L
                || layout.c >= SPREAD_MIN_C
                || variant.units(layout) < SPREAD_MAX_SMALL_UNITS
        }
        Variant::Masked => {
            layout.l >= SPREAD_MASKED_MIN_L
                && (layout.c >= SPREAD_MIN_C
                    || layout.l < SPREAD_MASKED_MAX_L
                    || variant.units(layout) < SPREAD_MASKED_MAX_SMALL_UNITS)
        }
        _ => false,
    }
}

/// The planes' and masked runs' split on CPU adapters (per-thread
/// partials) where [`spreads`] says so: up to `SPREAD_LANES` channels per
/// workgroup instead of one, a SIMD group's threads taking the same planes
/// of neighbouring channels, and up to an eighth of the partial states
/// (where C is at least eight times the target workgroups; fewer tiles
/// take more segments)
/// (lavapipe, Zen 5, per-dispatch timestamps: the moment pass of
/// `128x64x1024` 5.4-5.9 -> 3.9-4.1 ms, its gradient pass 7.9-8.2 ->
/// 6.2-7.0, `32x64x4096` 5.4-5.6 -> 3.8-3.9 and 8.3-8.5 -> 5.9-6.0; in
/// 16 MiB inputs 64 channels of 256 values were slower this way, 5.1-5.4
/// -> 6.4-6.9 ms, and of 16 or 64 values no faster: small inputs of such
/// planes spread, see `SPREAD_MAX_SMALL_UNITS`).
pub(crate) fn plan_spread(
    layout: &Layout,
    variant: Variant,
    max_groups: usize,
    target: usize,
) -> ReducePlan {
    split(
        layout,
        variant,
        (max_groups, target),
        (MAX_LANES_PER_GROUP, SPREAD_LANES),
    )
}

/// The rows reductions' split where they sweep ([`ReducePlan::sweep`]):
/// as [`plan_reduce`], with up to a whole workgroup of lanes (the threads
/// merge nothing through workgroup memory), so that rows of 1024 channels
/// and more are one thread per lane, each over its whole segment (A/B on
/// lavapipe, Zen 5: `4096x1024` training forward 12.2 -> 11.0 ms against
/// 64 lanes a workgroup, both sweeping).
pub(crate) fn plan_sweep(
    layout: &Layout,
    variant: Variant,
    max_groups: usize,
    target: usize,
) -> ReducePlan {
    ReducePlan {
        sweep: true,
        ..split(layout, variant, (max_groups, target), (WG as usize, 1))
    }
}

/// `max_lanes`: lanes per workgroup at most where `L == 1`;
/// `plane_lanes`: the lanes (channels) per workgroup where `L > 1`.
fn split(
    layout: &Layout,
    variant: Variant,
    (max_groups, target): (usize, usize),
    (max_lanes, plane_lanes): (usize, usize),
) -> ReducePlan {
    let wg = WG as usize;
    // Units per lane over the layout itself (`units` takes the reduce
    // layout's rows for `OddRows`).
    let units = variant.units(layout).max(1);
    let layout = &variant.reduce_layout(layout);
    let lanes = match variant {
        Variant::Rows | Variant::OddRows => layout.c.div_ceil(4),
        Variant::Planes | Variant::Masked | Variant::General => layout.c,
    };
    let lanes_per_group = if layout.l == 1 {
        lanes.next_power_of_two().min(max_lanes)
    } else {
        lanes.next_power_of_two().min(plane_lanes)
    };
    let threads_per_lane = wg / lanes_per_group;
    let tiles = lanes.div_ceil(lanes_per_group);
    let max_segments = units
        .div_ceil(threads_per_lane * MIN_VALUES_PER_THREAD)
        .clamp(1, MAX_SEGMENTS);
    let bounded = units
        .div_ceil(threads_per_lane * MAX_THREAD_UNITS)
        .min(MAX_SEGMENTS);
    let segments = target
        .max(1)
        .div_ceil(tiles)
        .clamp(1, max_segments)
        .max(bounded)
        .min((max_groups / tiles).max(1));
    let seg_len = units.div_ceil(segments);
    let segments = units.div_ceil(seg_len);
    ReducePlan {
        lanes_per_group: lanes_per_group as u32,
        threads_per_lane: threads_per_lane as u32,
        tiles: tiles as u32,
        segments: segments as u32,
        seg_len: seg_len as u32,
        paired: false,
        sweep: false,
    }
}
