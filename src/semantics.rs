//! PyTorch's rules for one forward call, shared by the GPU module and the
//! CPU reference so both accept, reject and update state identically.

use crate::config::BatchNormConfig;
use crate::error::{Error, Result};
use crate::types::{MemoryFormat, Rank};

/// An input as stored: `(N, C, L)` row-major, statistics per channel over
/// N and L.
///
/// A channels-first tensor of logical shape `(N, C, *spatial)` is
/// `(N, C, prod(spatial))`; a channels-last one is
/// `(N * prod(spatial), C, 1)`: the same per-channel values, with the
/// channels innermost. 2-D inputs have `L = 1` either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub n: usize,
    pub c: usize,
    pub l: usize,
}

impl Layout {
    /// The stored layout of a tensor of logical `shape` (at least 2-D)
    /// in `format`; `None` for fewer than two dimensions.
    pub fn of(shape: &[usize], format: MemoryFormat) -> Option<Layout> {
        let (&n, rest) = shape.split_first()?;
        let (&c, spatial) = rest.split_first()?;
        let s = spatial.iter().fold(1usize, |a, &d| a.saturating_mul(d));
        Some(match format {
            MemoryFormat::ChannelsFirst => Layout { n, c, l: s },
            MemoryFormat::ChannelsLast => Layout {
                n: n.saturating_mul(s),
                c,
                l: 1,
            },
        })
    }

    // The products saturate: a tensor's shape is checked at creation
    // (`checked_numel`), so only an empty one may have dimensions whose
    // products pass usize (`[0, 3, 2^33, 2^33]`), and saturating keeps
    // every zero (no false "one value per channel" from a wrapped count).

    /// Values per channel, `N * L`.
    pub fn per_channel(&self) -> usize {
        self.n.saturating_mul(self.l)
    }

    /// Values in one row, `C * L`.
    pub fn row(&self) -> usize {
        self.c.saturating_mul(self.l)
    }

    /// All values, `N * C * L`.
    pub fn numel(&self) -> usize {
        self.n.saturating_mul(self.c).saturating_mul(self.l)
    }
}

/// What a valid forward call does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForwardPlan {
    pub layout: Layout,
    /// Normalise with the batch statistics (training, or no running stats).
    pub batch_stats: bool,
    /// Training with running statistics: bump `num_batches_tracked` and
    /// update the running buffers.
    pub track_step: bool,
    /// The input has no elements: the output is empty and no statistic changes.
    pub empty: bool,
}

/// Number of elements of `shape`, or an error on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Error::TooLarge(format!("shape {shape:?} overflows")))
    })
}

/// Validates a forward call exactly as PyTorch's `BatchNorm{1,2,3}d.forward`
/// does, in the same order (rank, values per channel, per-channel buffer
/// sizes). `values_per_channel` overrides the input's own count where the
/// statistics cover several shards (all devices of a batch).
pub(crate) fn plan_forward(
    cfg: &BatchNormConfig,
    rank: Rank,
    training: bool,
    shape: &[usize],
    format: MemoryFormat,
    values_per_channel: Option<u64>,
) -> Result<ForwardPlan> {
    if !rank.accepts(shape.len()) {
        return Err(Error::InvalidRank {
            expected: rank.expected(),
            got: shape.len(),
        });
    }
    let numel = checked_numel(shape)?;
    let layout = Layout::of(shape, format).ok_or(Error::InvalidRank {
        expected: rank.expected(),
        got: shape.len(),
    })?;
    let batch_stats = training || !cfg.track_running_stats;
    let values = values_per_channel.unwrap_or(layout.per_channel() as u64);
    if batch_stats && values == 1 {
        return Err(Error::TooFewValues {
            shape: shape.to_vec(),
        });
    }
    let empty = numel == 0;
    // PyTorch returns early for empty inputs before checking the buffers.
    if !empty {
        let nf = cfg.num_features;
        if cfg.track_running_stats && layout.c != nf {
            return Err(Error::ChannelMismatch {
                name: "running_mean",
                expected: layout.c,
                actual: nf,
            });
        }
        if cfg.affine && layout.c != nf {
            return Err(Error::ChannelMismatch {
                name: "weight",
                expected: layout.c,
                actual: nf,
            });
        }
    }
    Ok(ForwardPlan {
        layout,
        batch_stats,
        track_step: training && cfg.track_running_stats,
        empty,
    })
}

/// `num_batches_tracked` after a step that counts (`counts`) or not; a
/// count past `u64::MAX` is an error, not a wrap to zero.
pub(crate) fn next_batch_count(batches_tracked: u64, counts: bool) -> Result<u64> {
    batches_tracked
        .checked_add(u64::from(counts))
        .ok_or_else(|| Error::TooLarge("num_batches_tracked would pass u64::MAX".into()))
}

/// The running-statistics factor for a step, given `num_batches_tracked`
/// after the increment: `momentum`, or `1 / num_batches_tracked` when
/// `momentum` is `None`.
pub(crate) fn momentum_factor(cfg: &BatchNormConfig, batches_tracked: u64) -> f64 {
    match cfg.momentum {
        Some(m) => m,
        None => 1.0 / batches_tracked.max(1) as f64,
    }
}

/// Checks that a setter got one value per feature.
pub(crate) fn check_len(name: &'static str, values: &[f32], expected: usize) -> Result<()> {
    if values.len() != expected {
        return Err(Error::LengthMismatch {
            name,
            expected,
            actual: values.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_of_both_formats() {
        let cf = Layout::of(&[2, 3, 4, 5], MemoryFormat::ChannelsFirst);
        assert_eq!(cf, Some(Layout { n: 2, c: 3, l: 20 }));
        let cl = Layout::of(&[2, 3, 4, 5], MemoryFormat::ChannelsLast);
        assert_eq!(cl, Some(Layout { n: 40, c: 3, l: 1 }));
        assert_eq!(
            Layout::of(&[7, 3], MemoryFormat::ChannelsLast),
            Layout::of(&[7, 3], MemoryFormat::ChannelsFirst)
        );
        assert_eq!(Layout::of(&[7], MemoryFormat::ChannelsFirst), None);
    }

    #[test]
    fn rank_errors_name_the_module_rank() {
        let cfg = BatchNormConfig::new(3);
        let f = |rank, shape: &[usize]| {
            plan_forward(&cfg, rank, true, shape, MemoryFormat::ChannelsFirst, None)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(
            f(Rank::D2, &[4, 3, 2]).as_deref(),
            Some("expected 4D input (got 3D input)")
        );
        assert_eq!(
            f(Rank::D3, &[4, 3, 2, 2]).as_deref(),
            Some("expected 5D input (got 4D input)")
        );
        assert_eq!(
            f(Rank::D1, &[4]).as_deref(),
            Some("expected 2D or 3D input (got 1D input)")
        );
        assert_eq!(f(Rank::D2, &[4, 3, 2, 2]), None);
    }
}
