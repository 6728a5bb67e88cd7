//! The statistics replicas exchange for SyncBatchNorm: plain data, checked
//! before use, merged in f64 in the order given.

use crate::error::{Error, Result};

/// Per-channel moments of one shard, or of several merged.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ShardMoments {
    /// Values per channel (`N * L` of the shard).
    pub count: u64,
    /// Per-channel mean (ignored where `count` is 0).
    pub mean: Vec<f64>,
    /// Per-channel sum of squared deviations from the mean.
    pub m2: Vec<f64>,
}

/// Per-channel gradient sums of one shard, or of several merged.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ShardGradSums {
    /// Values per channel (`N * L` of the shard).
    pub count: u64,
    /// Per-channel `sum(dy)`.
    pub sum_dy: Vec<f64>,
    /// Per-channel `sum(dy * x_hat)`.
    pub sum_dy_xhat: Vec<f64>,
}

pub(super) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidShard(msg.into())
}

/// The channel count all `shards` agree on (each checked by `check`).
fn common_channels<T>(shards: &[T], check: impl Fn(&T) -> Result<usize>) -> Result<usize> {
    let mut channels = None;
    for s in shards {
        let c = check(s)?;
        match channels {
            Some(prev) if prev != c => {
                return Err(invalid(format!(
                    "shards disagree on the channel count ({c} vs {prev})"
                )))
            }
            _ => channels = Some(c),
        }
    }
    channels.ok_or_else(|| invalid("no shards to merge"))
}

fn sum_counts(mut counts: impl Iterator<Item = u64>) -> Result<u64> {
    counts
        .try_fold(0u64, |a, c| a.checked_add(c))
        .ok_or_else(|| invalid("the counts overflow u64"))
}

impl ShardMoments {
    /// Moments of a shard with no values, over `channels` channels.
    pub fn empty(channels: usize) -> Self {
        Self {
            count: 0,
            mean: vec![0.0; channels],
            m2: vec![0.0; channels],
        }
    }

    /// Checks the struct and returns its channel count: `mean` and `m2` of
    /// equal length, `m2` not negative (NaN allowed: it carries a NaN
    /// input's poison).
    pub fn validate(&self) -> Result<usize> {
        if self.mean.len() != self.m2.len() {
            return Err(invalid(format!(
                "mean has {} channels, m2 {}",
                self.mean.len(),
                self.m2.len()
            )));
        }
        if self.count > 0 {
            if let Some(ch) = self.m2.iter().position(|&v| v < 0.0) {
                return Err(invalid(format!("m2 of channel {ch} is negative")));
            }
        }
        Ok(self.mean.len())
    }

    /// Merges shards with Chan's formula, in the order given.
    pub fn merge(shards: &[ShardMoments]) -> Result<ShardMoments> {
        let c = common_channels(shards, ShardMoments::validate)?;
        let total = sum_counts(shards.iter().map(|s| s.count))?;
        let mut acc = ShardMoments::empty(c);
        for s in shards.iter().filter(|s| s.count > 0) {
            let (na, nb) = (acc.count as f64, s.count as f64);
            let n = na + nb;
            let rows = acc.mean.iter_mut().zip(acc.m2.iter_mut());
            for ((mean, m2), (&sm, &sm2)) in rows.zip(s.mean.iter().zip(&s.m2)) {
                let d = sm - *mean;
                *m2 += sm2 + d * d * na * nb / n;
                // An infinite mean (an infinite input) stays infinite, as a
                // sum of the values would: Chan's step makes inf - inf.
                *mean = if mean.is_finite() && sm.is_finite() {
                    *mean + d * nb / n
                } else {
                    (*mean * na + sm * nb) / n
                };
            }
            acc.count += s.count;
        }
        acc.count = total;
        Ok(acc)
    }

    /// Biased variance `M2 / count` of channel `ch` (`None` past the last
    /// channel).
    pub fn variance(&self, ch: usize) -> Option<f64> {
        self.m2.get(ch).map(|m2| m2 / self.count as f64)
    }
}

impl ShardGradSums {
    /// Checks the struct and returns its channel count.
    pub fn validate(&self) -> Result<usize> {
        if self.sum_dy.len() != self.sum_dy_xhat.len() {
            return Err(invalid(format!(
                "sum_dy has {} channels, sum_dy_xhat {}",
                self.sum_dy.len(),
                self.sum_dy_xhat.len()
            )));
        }
        Ok(self.sum_dy.len())
    }

    /// Adds the shards' sums, in the order given.
    pub fn merge(shards: &[ShardGradSums]) -> Result<ShardGradSums> {
        let c = common_channels(shards, ShardGradSums::validate)?;
        let mut acc = ShardGradSums {
            count: sum_counts(shards.iter().map(|s| s.count))?,
            sum_dy: vec![0.0; c],
            sum_dy_xhat: vec![0.0; c],
        };
        for s in shards {
            acc.sum_dy
                .iter_mut()
                .zip(&s.sum_dy)
                .for_each(|(a, b)| *a += b);
            let pairs = acc.sum_dy_xhat.iter_mut().zip(&s.sum_dy_xhat);
            pairs.for_each(|(a, b)| *a += b);
        }
        Ok(acc)
    }
}
