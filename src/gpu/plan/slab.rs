//! How the elementwise kernels split a chunk over invocations.

use super::{SLAB, WG};

/// Runs of `L` at least this long take run slabs (`Slab::runs`) when rows
/// are too long for whole-row strides (and, for `L % 4 == 0`, a run is not
/// a whole number of slabs).
pub(crate) const RUN_SLAB_MIN_L: usize = 128;
/// A run of L values spans at least this many blocks of a run slab, so
/// that few blocks straddle two runs.
const BLOCKS_PER_RUN: usize = 16;

/// How the elementwise kernels cover a chunk: invocation `g` takes the
/// `SLAB` vec4s `first + k * stride` (k < SLAB) with
/// `first = (g / stride) * stride * SLAB + g % stride`, so the vec4s of one
/// invocation share their channels and the terms are read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slab {
    /// Distance in vec4s between the vec4s of one invocation.
    pub stride: usize,
    /// Invocations over the chunk.
    pub invocations: usize,
    /// Run slabs: blocks of `stride * SLAB` consecutive vec4s, not a whole
    /// number of rows. The general elementwise kernels use one channel's
    /// terms for a slab that lies within one run of L values and look up
    /// each vec4's channels in the few that straddle two runs
    /// (the `*_runs` entry points).
    pub runs: bool,
}

impl Slab {
    /// The slab for `count` elements in rows of `row` elements. The stride
    /// is a whole number of rows that is also a whole number of vec4s, and
    /// at least `1 / SLAB` of the vec4s (one block). Where rows are so long
    /// that this leaves fewer than `SLAB` vec4s per invocation, and
    /// `plane` (the vec4s of one channel's run of L values, for `L % 4 ==
    /// 0` and a chunk starting on a run) is a multiple of `SLAB`, each
    /// block is one run instead, `stride = plane / SLAB`; where instead
    /// `run` (the L of a layout the general or plane kernels walk) is at least
    /// [`RUN_SLAB_MIN_L`], the slab is a run slab ([`Slab::runs`]) of blocks
    /// about `1 / BLOCKS_PER_RUN` of a run.
    pub fn of(count: usize, row: usize, plane: Option<usize>, run: Option<usize>) -> Slab {
        let vec4s = count.div_ceil(4).max(1);
        let unit = match row % 4 {
            0 => row / 4,
            2 => row / 2,
            _ => row,
        }
        .max(1);
        let stride = if unit >= vec4s {
            vec4s
        } else {
            vec4s.div_ceil(SLAB).div_ceil(unit) * unit
        };
        let per_invocation = vec4s.div_ceil(stride);
        let (stride, runs) = match (plane, run) {
            (Some(p), _) if per_invocation < SLAB && p.is_multiple_of(SLAB) => (p / SLAB, false),
            (_, Some(l)) if per_invocation < SLAB && l >= RUN_SLAB_MIN_L => {
                let s = l / 4 / (BLOCKS_PER_RUN * SLAB);
                (s.clamp(1, WG as usize), true)
            }
            _ => (stride, false),
        };
        Slab {
            stride,
            invocations: vec4s.div_ceil(stride * SLAB) * stride,
            runs,
        }
    }

    /// Workgroups of the elementwise kernels.
    pub fn groups(&self) -> u32 {
        (self.invocations as u32).div_ceil(WG)
    }
}
