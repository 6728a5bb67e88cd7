//! [`BatchNormConfig`]: the constructor arguments of `torch.nn.BatchNorm1d`,
//! `BatchNorm2d` and `BatchNorm3d` (the same for all three).

use crate::error::{Error, Result};

/// Configuration of a batch-norm module of any rank, with PyTorch's
/// defaults: `eps = 1e-5`, `momentum = Some(0.1)`, `affine = true`,
/// `track_running_stats = true`.
///
/// ```
/// use wgpu_batchnorm::BatchNormConfig;
/// let cfg = BatchNormConfig::new(16).eps(1e-3).momentum(None).affine(false);
/// assert_eq!(cfg.num_features, 16);
/// assert!(cfg.validate().is_ok());
/// assert!(BatchNormConfig::new(0).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BatchNormConfig {
    /// `C`, the number of channels.
    pub num_features: usize,
    /// Added to the variance before the square root, as an f32 (as
    /// PyTorch does): finite and at least `f32::MIN_POSITIVE` there.
    pub eps: f64,
    /// Running-statistics factor in `[0, 1]`; `None` is the cumulative
    /// average (`1 / num_batches_tracked`). The kernels apply it as an f32,
    /// as PyTorch's CUDA kernels do (within 3e-8 of 1 it acts as 1; the
    /// CPU reference keeps the f64, as PyTorch's CPU kernels do).
    pub momentum: Option<f64>,
    /// Learnable per-channel `weight` (init 1) and `bias` (init 0).
    pub affine: bool,
    /// Keep `running_mean` (init 0), `running_var` (init 1) and
    /// `num_batches_tracked`; when false, batch statistics are used in eval too.
    pub track_running_stats: bool,
}

/// The name `BatchNorm1d` code has always used; the same type as
/// [`BatchNormConfig`].
pub type BatchNorm1dConfig = BatchNormConfig;

impl BatchNormConfig {
    /// PyTorch defaults for `num_features` channels.
    pub fn new(num_features: usize) -> Self {
        Self {
            num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }

    /// Sets `eps` (an `f64`, or anything that widens to one, such as `f32`).
    pub fn eps(mut self, eps: impl Into<f64>) -> Self {
        self.eps = eps.into();
        self
    }

    /// Sets `momentum` (`None`: cumulative moving average).
    pub fn momentum(mut self, momentum: Option<f64>) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets `affine`.
    pub fn affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }

    /// Sets `track_running_stats`.
    pub fn track_running_stats(mut self, track: bool) -> Self {
        self.track_running_stats = track;
        self
    }

    /// `eps` as it is added to the variance: an f32, the kernels' type and
    /// PyTorch's for an f32 input (the CPU reference adds it the same way).
    pub(crate) fn eps_f32(&self) -> f32 {
        self.eps as f32
    }

    /// Checks the values: `0 < num_features <= u32::MAX`, `eps` finite and
    /// at least `f32::MIN_POSITIVE` (about 1.2e-38) as an `f32`, the
    /// kernels' type (a subnormal one reads as 0 on GPUs that flush
    /// subnormals), `momentum` in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, message: String| Err(Error::InvalidConfig { field, message });
        if self.num_features == 0 {
            return bad("num_features", "must be > 0".into());
        }
        if u32::try_from(self.num_features).is_err() {
            return bad(
                "num_features",
                format!("{} exceeds u32::MAX", self.num_features),
            );
        }
        // The kernels take eps as an f32: finite and normal there (so also
        // > 0 as the f64 it came from; NaN fails both comparisons), as GPUs
        // that flush subnormals would add 0.
        let eps32 = self.eps_f32();
        if !(eps32.is_finite() && eps32 >= f32::MIN_POSITIVE) {
            return bad(
                "eps",
                format!(
                    "must be finite and at least f32::MIN_POSITIVE (1.2e-38) as an f32, got {}",
                    self.eps
                ),
            );
        }
        if let Some(m) = self.momentum {
            if !(0.0..=1.0).contains(&m) {
                return bad("momentum", format!("must be in [0, 1], got {m}"));
            }
        }
        Ok(())
    }
}
