//! How the elementwise kernels split a chunk over invocations.

use super::{SLAB, WG};

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
}

impl Slab {
    /// The slab for `count` elements in rows of `row` elements. The stride
    /// is a whole number of rows that is also a whole number of vec4s, and
    /// at least `1 / SLAB` of the vec4s (one block). Where rows are so long
    /// that this leaves fewer than `SLAB` vec4s per invocation, and
    /// `plane` (the vec4s of one channel's run of L values, for `L % 4 ==
    /// 0` and a chunk starting on a run) is a multiple of `SLAB`, each
    /// block is one run instead, `stride = plane / SLAB`.
    pub fn of(count: usize, row: usize, plane: Option<usize>) -> Slab {
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
        let stride = match plane {
            Some(p) if per_invocation < SLAB && p.is_multiple_of(SLAB) => p / SLAB,
            _ => stride,
        };
        Slab {
            stride,
            invocations: vec4s.div_ceil(stride * SLAB) * stride,
        }
    }

    /// Workgroups of the elementwise kernels.
    pub fn groups(&self) -> u32 {
        (self.invocations as u32).div_ceil(WG)
    }
}
