//! Inference folding: a trained batch norm (eval mode, running statistics)
//! folded into the layer before it, a `Linear` or a convolution.
//!
//! With `s = weight / sqrt(running_var + eps)` per output channel `o`:
//! `W'[o, ...] = W[o, ...] * s[o]` and `b'[o] = s[o] * (b[o] - running_mean[o]) + bias[o]`,
//! so the folded layer computes `BatchNorm.eval(layer(x))`. Computed in f64
//! on the host, except `running_var + eps`, which is added as an f32, as the
//! eval kernels and PyTorch's `fuse_linear_bn_eval` / `fuse_conv_bn_eval`
//! add it.

use super::{BatchNorm, SpatialRank};
use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::tensor::Tensor;
use crate::semantics::check_len;

/// A `Linear` layer with a batch norm folded in; PyTorch's layout
/// (`weight` is `[out_features, in_features]`, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedLinear {
    /// `[out_features, in_features]`.
    pub weight: Vec<f32>,
    /// `[out_features]`.
    pub bias: Vec<f32>,
    /// Input features.
    pub in_features: usize,
}

impl FoldedLinear {
    /// Output features.
    pub fn out_features(&self) -> usize {
        self.bias.len()
    }

    /// Uploads weight `[out, in]` and bias `[out]` as GPU tensors.
    pub fn to_tensors(&self, ctx: &GpuContext) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::from_slice(ctx, &self.weight, &[self.out_features(), self.in_features])?,
            Tensor::from_slice(ctx, &self.bias, &[self.out_features()])?,
        ))
    }
}

/// A convolution (`Conv1d`/`Conv2d`/`Conv3d`) with a batch norm folded in;
/// PyTorch's weight layout `[out_channels, in_channels / groups, *kernel]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedConv {
    /// The weight, `shape` row-major.
    pub weight: Vec<f32>,
    /// `[out_channels]`.
    pub bias: Vec<f32>,
    /// The weight's shape, `[out_channels, ...]`.
    pub shape: Vec<usize>,
}

impl<R: SpatialRank> BatchNorm<R> {
    /// Per output channel `(s, t)` with `folded(w, b) = (s * w, s * b + t)`.
    fn fold_factors(&self) -> Result<Vec<(f64, f64)>> {
        let c = self.cfg.num_features;
        let (rm, rv) = match (self.running_mean()?, self.running_var()?) {
            (Some(m), Some(v)) => (m, v),
            _ => {
                return Err(Error::NotAvailable {
                    name: "running statistics",
                    reason: "folding needs track_running_stats = true",
                })
            }
        };
        let gamma = self.weight()?.unwrap_or_else(|| vec![1.0; c]);
        let beta = self.bias()?.unwrap_or_else(|| vec![0.0; c]);
        // Added as an f32, as the eval kernels and PyTorch's
        // `fuse_*_bn_eval` (`rsqrt(running_var + eps)` on f32 tensors) do.
        let eps = self.cfg.eps_f32();
        Ok(rm
            .iter()
            .zip(&rv)
            .zip(gamma.iter().zip(&beta))
            .map(|((&m, &v), (&g, &b))| {
                let s = f64::from(g) / f64::from(v + eps).sqrt();
                (s, f64::from(b) - s * f64::from(m))
            })
            .collect())
    }

    /// Folds `weight` (`C` rows of `per_row` values) and `bias` (`C`).
    fn fold_rows(
        &self,
        weight: &[f32],
        per_row: usize,
        bias: Option<&[f32]>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let _span = crate::trace::span!("BatchNorm::fold", weights = weight.len());
        let c = self.cfg.num_features;
        if per_row == 0 || Some(weight.len()) != c.checked_mul(per_row) {
            return Err(Error::LengthMismatch {
                name: "layer weight",
                expected: c.saturating_mul(per_row),
                actual: weight.len(),
            });
        }
        if let Some(b) = bias {
            check_len("layer bias", b, c)?;
        }
        let factors = self.fold_factors()?;
        let w = weight
            .chunks_exact(per_row)
            .zip(&factors)
            .flat_map(|(row, &(s, _))| row.iter().map(move |&v| (s * f64::from(v)) as f32))
            .collect();
        let zeros = vec![0.0; c];
        let b = bias
            .unwrap_or(&zeros)
            .iter()
            .zip(&factors)
            .map(|(&lb, &(s, t))| (s * f64::from(lb) + t) as f32)
            .collect();
        Ok((w, b))
    }

    /// Folds this batch norm's eval transform into the preceding Linear
    /// layer (`weight` `[C, in_features]`, optional `bias` `[C]`). Needs
    /// running statistics.
    pub fn fold_into_linear(
        &self,
        weight: &[f32],
        bias: Option<&[f32]>,
        in_features: usize,
    ) -> Result<FoldedLinear> {
        let (weight, bias) = self.fold_rows(weight, in_features, bias)?;
        Ok(FoldedLinear {
            weight,
            bias,
            in_features,
        })
    }

    /// Folds this batch norm's eval transform into the preceding
    /// convolution: `weight` of `shape` `[C, in_channels / groups, *kernel]`
    /// (any number of kernel dims), optional `bias` `[C]`. Needs running
    /// statistics.
    pub fn fold_into_conv(
        &self,
        weight: &[f32],
        shape: &[usize],
        bias: Option<&[f32]>,
    ) -> Result<FoldedConv> {
        let c = self.cfg.num_features;
        if shape.len() < 2 || shape.first() != Some(&c) {
            return Err(Error::ShapeMismatch {
                what: "conv weight shape ([out_channels = num_features, ...])",
                expected: vec![c],
                actual: shape.to_vec(),
            });
        }
        let per_row = (shape.iter().skip(1))
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::TooLarge(format!("conv weight shape {shape:?} overflows")))?;
        let (weight, bias) = self.fold_rows(weight, per_row, bias)?;
        Ok(FoldedConv {
            weight,
            bias,
            shape: shape.to_vec(),
        })
    }
}
