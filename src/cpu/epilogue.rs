//! The reference's fused epilogue: `y = relu?(bn(x) + residual?)`, and its
//! backward (PyTorch's ReLU backward passes the gradient where the output
//! is not `<= 0`; the residual's gradient is what the add receives).

use super::layout::{to_f32, to_f64};
use super::BatchNorm;
use crate::error::{Error, Result};
use crate::types::{MemoryFormat, SpatialRank};

/// What a fused forward left for backward.
#[derive(Debug, Clone)]
pub(super) struct SavedEpilogue {
    /// The output, for a ReLU's mask.
    output: Option<Vec<f64>>,
    residual: bool,
}

impl<R: SpatialRank> BatchNorm<R> {
    /// Forward with a fused epilogue, `y = act(bn(x) + residual)`:
    /// `residual` (same length and order as `x`) is added when given, and
    /// negative values become 0 with `relu` (NaN stays NaN).
    pub fn forward_fused(
        &mut self,
        x: &[f32],
        shape: &[usize],
        format: MemoryFormat,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Result<Vec<f32>> {
        if let Some(r) = residual {
            if r.len() != x.len() {
                return Err(Error::LengthMismatch {
                    name: "residual",
                    expected: x.len(),
                    actual: r.len(),
                });
            }
        }
        let mut y = self.forward_f64_with_format(&to_f64(x), shape, format)?;
        if let Some(r) = residual {
            y.iter_mut().zip(r).for_each(|(v, &r)| *v += f64::from(r));
        }
        if relu {
            y.iter_mut().filter(|v| **v < 0.0).for_each(|v| *v = 0.0);
        }
        if let Some(saved) = self.saved.as_mut() {
            saved.epilogue = (relu || residual.is_some()).then(|| SavedEpilogue {
                output: relu.then(|| y.clone()),
                residual: residual.is_some(),
            });
        }
        Ok(to_f32(&y))
    }

    /// `dy` through the last forward's epilogue, and the residual's
    /// gradient when the forward had one.
    pub(super) fn through_epilogue(&self, dy: Vec<f64>) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        let saved = self.saved.as_ref().ok_or(Error::NoForward)?;
        if dy.len() != saved.x.len() {
            return Err(Error::LengthMismatch {
                name: "grad_output",
                expected: saved.x.len(),
                actual: dy.len(),
            });
        }
        let Some(e) = &saved.epilogue else {
            return Ok((dy, None));
        };
        let g: Vec<f64> = match &e.output {
            Some(y) => dy
                .iter()
                .zip(y)
                .map(|(&g, &y)| if y <= 0.0 { 0.0 } else { g })
                .collect(),
            None => dy,
        };
        let residual = e.residual.then(|| g.clone());
        Ok((g, residual))
    }
}
