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
    /// `(N, C)` with other C, or `(N, C, L)` with `L % 4 != 0` and short
    /// rows (`C * L` small, see `VIRTUAL_ROW_MAX`), in one chunk: the
    /// reductions walk the tensor as rows of `lcm(C * L, 4)` virtual
    /// channels (`reduce_layout`; virtual channel `v` is channel
    /// `v / L % C`), so every vec4 they read is aligned and whole, and the
    /// finalize steps merge the `folds` virtual channels of each channel;
    /// the elementwise kernels are the general ones.
    OddRows,
    /// `L > 4` otherwise: the reductions read the aligned vec4s each run
    /// of L values touches, masking the components outside it; the
    /// elementwise kernels are the general ones.
    Masked,
    /// Anything else: each value's channel is looked up.
    General,
}

/// Values in a virtual row (`lcm(C * L, 4)`) up to which `(N, C, L)`
/// layouts with `L > 1` take the virtual-channel reductions (`OddRows`):
/// their partial states hold one entry per virtual channel, and each
/// channel's finalize merges `folds` of them per partial row.
const VIRTUAL_ROW_MAX: usize = 4096;
/// Virtual channels per channel up to which they do (the finalize merges
/// them one after another).
const VIRTUAL_FOLDS_MAX: usize = 128;
/// Runs of at least this many values take the masked reductions, which
/// read `(L + 6) / 4` vec4s per run: 1.6x the values at L = 5, 1.45x at
/// L = 11, 1.2x at L = 13, 1.14x at L = 21, where on lavapipe they ran as
/// fast as the virtual channels (whose finalize merges more states).
const MASKED_MIN_L: usize = 12;

impl Variant {
    /// The variant for `layout`.
    pub fn of(layout: &Layout) -> Variant {
        if layout.l.is_multiple_of(4) {
            Variant::Planes
        } else if layout.l == 1 && layout.c.is_multiple_of(4) {
            Variant::Rows
        } else if layout.l == 1 || Self::short_runs(layout) {
            // Odd C (any width: the plan falls back where the partial
            // states would not fit), or short rows of odd L.
            Variant::OddRows
        } else {
            Self::run_fallback(layout)
        }
    }

    /// The variant for `layout` where `OddRows` does not fit (a chunked
    /// tensor, partial states over a binding): the masked reductions for
    /// runs longer than a vec4, else the general ones.
    pub fn run_fallback(layout: &Layout) -> Variant {
        if layout.l > 4 {
            Variant::Masked
        } else {
            Variant::General
        }
    }

    /// Whether `(N, C, L)` with `L > 1`, `L % 4 != 0` takes the virtual
    /// channels: rows of `lcm(C * L, 4)` values within `VIRTUAL_ROW_MAX`
    /// and `VIRTUAL_FOLDS_MAX`, and runs shorter than `MASKED_MIN_L`.
    fn short_runs(layout: &Layout) -> bool {
        let row = lcm4(layout);
        row <= VIRTUAL_ROW_MAX
            && row / layout.c.max(1) <= VIRTUAL_FOLDS_MAX
            && layout.l < MASKED_MIN_L
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
    /// rows of `lcm(C * L, 4)` virtual channels (the last row may be cut
    /// short; virtual channel `v` is channel `v / L % C`); else `layout`.
    pub fn reduce_layout(self, layout: &Layout) -> Layout {
        match self {
            Variant::OddRows => {
                let virtual_c = lcm4(layout);
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

/// `lcm(C * L, 4)`.
fn lcm4(layout: &Layout) -> usize {
    lcm((layout.c * layout.l).max(1), 4)
}

/// The least common multiple of `a` and `b`, both positive.
pub(super) fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
