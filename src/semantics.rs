//! PyTorch's rules for one forward call, shared by the GPU module and the
//! CPU reference so both accept, reject and update state identically.

use crate::config::BatchNorm1dConfig;
use crate::error::{Error, Result};

/// An input viewed as `(N, C, L)`; 2-D inputs have `L = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub n: usize,
    pub c: usize,
    pub l: usize,
}

impl Layout {
    /// Values per channel, `N * L`.
    pub fn per_channel(&self) -> usize {
        self.n * self.l
    }

    /// Values in one row (one sample), `C * L`.
    pub fn row(&self) -> usize {
        self.c * self.l
    }

    /// All values, `N * C * L`.
    pub fn numel(&self) -> usize {
        self.n * self.c * self.l
    }

    /// Offset of `(n, c, l)` in the row-major buffer.
    pub fn offset(&self, n: usize, c: usize, l: usize) -> usize {
        (n * self.c + c) * self.l + l
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

/// Validates a forward call exactly as `torch.nn.BatchNorm1d.forward` does,
/// in the same order (rank, values per channel, per-channel buffer sizes).
pub(crate) fn plan_forward(
    cfg: &BatchNorm1dConfig,
    training: bool,
    shape: &[usize],
) -> Result<ForwardPlan> {
    plan_forward_with(cfg, training, shape, None)
}

/// [`plan_forward`] where the statistics cover `values_per_channel` values
/// (all shards of a batch split across devices) instead of this input's.
pub(crate) fn plan_forward_with(
    cfg: &BatchNorm1dConfig,
    training: bool,
    shape: &[usize],
    values_per_channel: Option<u64>,
) -> Result<ForwardPlan> {
    let layout = match *shape {
        [n, c] => Layout { n, c, l: 1 },
        [n, c, l] => Layout { n, c, l },
        _ => return Err(Error::InvalidRank(shape.len())),
    };
    let batch_stats = training || !cfg.track_running_stats;
    let values = values_per_channel.unwrap_or(layout.per_channel() as u64);
    if batch_stats && values == 1 {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        return Err(Error::TooFewValues(format!("[{}]", dims.join(", "))));
    }
    let empty = crate::tensor::checked_numel(shape)? == 0;
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

/// The running-statistics factor for a step, given `num_batches_tracked`
/// after the increment: `momentum`, or `1 / num_batches_tracked` when
/// `momentum` is `None`.
pub(crate) fn momentum_factor(cfg: &BatchNorm1dConfig, batches_tracked: u64) -> f64 {
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
