//! The layout classes the kernels walk (`Variant`): which entry points and
//! pipeline constants a layout takes, and the layout its reductions read.

use super::Layout;

/// How the kernels walk a layout: an entry point per variant for the
/// elementwise kernels, pipeline constants (`WIDTH`, `MASKED`) or entry
/// points for the reductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Variant {
    /// `L % 4 == 0`: each vec4 lies within one channel.
    Planes,
    /// `(N, C)` with `C % 4 == 0`: each vec4 is four consecutive channels
    /// of one row; a reduction thread takes those four channels.
    Rows,
    /// `(N, C)` with other C, in one chunk: the reductions walk the tensor
    /// as rows of `lcm(C, 4)` virtual channels (`reduce_layout`), so every
    /// vec4 they read is aligned and whole, and the finalize steps merge
    /// the `folds` virtual channels of each channel; the elementwise
    /// kernels are the general ones.
    OddRows,
    /// `L > 4` otherwise: the reductions read the aligned vec4s each run
    /// of L values touches, masking the components outside it; the
    /// elementwise kernels are the general ones.
    Masked,
    /// Anything else: each value's channel is looked up.
    General,
}

impl Variant {
    /// The variant for `layout`.
    pub fn of(layout: &Layout) -> Variant {
        if layout.l.is_multiple_of(4) {
            Variant::Planes
        } else if layout.l == 1 && layout.c.is_multiple_of(4) {
            Variant::Rows
        } else if layout.l == 1 {
            Variant::OddRows
        } else if layout.l > 4 {
            Variant::Masked
        } else {
            Variant::General
        }
    }

    /// Consecutive values along L a reduction reads at once (the
    /// `WIDTH` of masked units is unused).
    pub fn width(self) -> usize {
        match self {
            Variant::Planes => 4,
            Variant::Rows | Variant::OddRows | Variant::Masked | Variant::General => 1,
        }
    }

    /// Reduction units per lane over `layout`: values, vec4s along L,
    /// rows (of virtual channels for `OddRows`), or the vec4s each run of
    /// L touches (`run_vec4s` in `reduce.wgsl`).
    pub fn units(self, layout: &Layout) -> usize {
        match self {
            Variant::Masked => layout.n * ((layout.l + 6) / 4),
            Variant::OddRows => self.reduce_layout(layout).n,
            _ => layout.per_channel() / self.width(),
        }
    }

    /// The layout the reductions walk: for `OddRows`, the same values as
    /// rows of `lcm(C, 4)` virtual channels (the last row may be cut short;
    /// virtual channel `v` is channel `v % C`); else `layout`.
    pub fn reduce_layout(self, layout: &Layout) -> Layout {
        match self {
            Variant::OddRows => {
                let c = layout.c.max(1);
                let virtual_c = c * 4 / gcd(c, 4);
                Layout {
                    n: layout.numel().div_ceil(virtual_c),
                    c: virtual_c,
                    l: 1,
                }
            }
            _ => *layout,
        }
    }

    /// Virtual channels per channel in the reductions' partial states (1
    /// but for `OddRows`).
    pub fn folds(self, layout: &Layout) -> usize {
        self.reduce_layout(layout).c / layout.c.max(1)
    }

    /// Extra partial rows after the segments' (`OddRows`: the tail row, the
    /// values of the last virtual row's vec4 that the tensor's end cuts).
    pub fn tail_rows(self) -> u32 {
        u32::from(self == Variant::OddRows)
    }

    /// Whether the elementwise kernels look up each value's channel.
    pub fn general_elementwise(self) -> bool {
        matches!(self, Variant::OddRows | Variant::Masked | Variant::General)
    }

    /// Whether a reduction thread takes four consecutive channels.
    pub fn four_channel_lanes(self) -> bool {
        matches!(self, Variant::Rows | Variant::OddRows)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
