//! Small value types shared by the GPU and CPU paths: element types,
//! memory formats and module ranks.

/// Element type of a [`Tensor`](crate::Tensor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half), stored on the GPU and computed with f32
    /// accumulation; needs the adapter's `SHADER_F16` feature.
    #[cfg(feature = "f16")]
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            #[cfg(feature = "f16")]
            DType::F16 => 2,
        }
    }

    /// Short lowercase name (`"f32"`, `"f16"`), used in labels.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            #[cfg(feature = "f16")]
            DType::F16 => "f16",
        }
    }
}

/// How the dimensions of a tensor of logical shape `(N, C, *spatial)` are
/// laid out in memory.
///
/// The shape a [`Tensor`](crate::Tensor) reports is always the logical one,
/// channels second, as in PyTorch; the memory format says where each value
/// is stored.
///
/// | logical shape | `ChannelsFirst` storage | `ChannelsLast` storage |
/// | --- | --- | --- |
/// | `(N, C)` | `(N, C)` | `(N, C)` (the same) |
/// | `(N, C, L)` | `(N, C, L)` | `(N, L, C)` |
/// | `(N, C, H, W)` | `(N, C, H, W)` | `(N, H, W, C)` (PyTorch's `channels_last`) |
/// | `(N, C, D, H, W)` | `(N, C, D, H, W)` | `(N, D, H, W, C)` (`channels_last_3d`) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemoryFormat {
    /// Row-major in the logical order: channels before the spatial dims.
    #[default]
    ChannelsFirst,
    /// Channels innermost: each position's `C` values are contiguous.
    ChannelsLast,
}

/// The input ranks a batch-norm module accepts, as in PyTorch:
/// `BatchNorm1d` takes `(N, C)` or `(N, C, L)`, `BatchNorm2d`
/// `(N, C, H, W)`, `BatchNorm3d` `(N, C, D, H, W)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rank {
    /// `BatchNorm1d`: 2-D or 3-D inputs.
    D1,
    /// `BatchNorm2d`: 4-D inputs.
    D2,
    /// `BatchNorm3d`: 5-D inputs.
    D3,
}

impl Rank {
    /// PyTorch's module name (`"BatchNorm2d"`).
    pub fn module_name(self) -> &'static str {
        match self {
            Rank::D1 => "BatchNorm1d",
            Rank::D2 => "BatchNorm2d",
            Rank::D3 => "BatchNorm3d",
        }
    }

    /// Whether an input of `dims` dimensions is accepted.
    pub fn accepts(self, dims: usize) -> bool {
        match self {
            Rank::D1 => dims == 2 || dims == 3,
            Rank::D2 => dims == 4,
            Rank::D3 => dims == 5,
        }
    }

    /// The wording PyTorch uses for the accepted ranks (`"2D or 3D"`, `"4D"`).
    pub fn expected(self) -> &'static str {
        match self {
            Rank::D1 => "2D or 3D",
            Rank::D2 => "4D",
            Rank::D3 => "5D",
        }
    }
}

/// The input ranks of a module type, [`Rank1d`], [`Rank2d`] or
/// [`Rank3d`]: the type parameter of [`BatchNorm`](crate::BatchNorm) and
/// [`cpu::BatchNorm`](crate::cpu::BatchNorm).
pub trait SpatialRank: sealed::Sealed + Send + Sync + 'static {
    /// The ranks, as a value.
    const RANK: Rank;
}

mod sealed {
    pub trait Sealed {}
}

/// `BatchNorm1d`: `(N, C)` or `(N, C, L)` inputs.
#[derive(Debug)]
pub enum Rank1d {}
/// `BatchNorm2d`: `(N, C, H, W)` inputs.
#[derive(Debug)]
pub enum Rank2d {}
/// `BatchNorm3d`: `(N, C, D, H, W)` inputs.
#[derive(Debug)]
pub enum Rank3d {}

impl sealed::Sealed for Rank1d {}
impl sealed::Sealed for Rank2d {}
impl sealed::Sealed for Rank3d {}
impl SpatialRank for Rank1d {
    const RANK: Rank = Rank::D1;
}
impl SpatialRank for Rank2d {
    const RANK: Rank = Rank::D2;
}
impl SpatialRank for Rank3d {
    const RANK: Rank = Rank::D3;
}
