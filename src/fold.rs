//! Inference folding: a trained batch norm (eval mode, running statistics)
//! folded into the preceding `Linear` layer.
//!
//! With `s = weight / sqrt(running_var + eps)` per output feature:
//! `W' = diag(s) W` and `b' = s * (b - running_mean) + bias`, so
//! `Linear'(x) = BatchNorm1d.eval(Linear(x))`.

use crate::batch_norm::BatchNorm1d;
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

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

impl BatchNorm1d {
    /// Folds this batch norm's eval transform into the preceding Linear
    /// layer (`weight` `[C, in_features]`, optional `bias` `[C]`). Needs
    /// running statistics; computed in f64 on the host.
    pub fn fold_into_linear(
        &self,
        weight: &[f32],
        bias: Option<&[f32]>,
        in_features: usize,
    ) -> Result<FoldedLinear> {
        let c = self.config().num_features;
        if in_features == 0 || weight.len() != c * in_features {
            return Err(Error::LengthMismatch {
                name: "linear weight",
                expected: c * in_features,
                actual: weight.len(),
            });
        }
        if let Some(b) = bias {
            crate::semantics::check_len("linear bias", b, c)?;
        }
        let (rm, rv) = match (self.running_mean()?, self.running_var()?) {
            (Some(m), Some(v)) => (m, v),
            _ => {
                return Err(Error::NotAvailable(
                    "running statistics",
                    "folding needs track_running_stats = true",
                ))
            }
        };
        let gamma = self.weight()?.unwrap_or_else(|| vec![1.0; c]);
        let beta = self.bias()?.unwrap_or_else(|| vec![0.0; c]);
        let eps = self.config().eps;
        let mut w = vec![0f32; weight.len()];
        let mut b = vec![0f32; c];
        for o in 0..c {
            let s = f64::from(gamma[o]) / (f64::from(rv[o]) + eps).sqrt();
            for i in 0..in_features {
                w[o * in_features + i] = (s * f64::from(weight[o * in_features + i])) as f32;
            }
            let lb = bias.map_or(0.0, |b| f64::from(b[o]));
            b[o] = (s * (lb - f64::from(rm[o])) + f64::from(beta[o])) as f32;
        }
        Ok(FoldedLinear {
            weight: w,
            bias: b,
            in_features,
        })
    }
}
