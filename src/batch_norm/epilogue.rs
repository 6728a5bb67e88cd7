//! Fused epilogues: `y = act(bn(x) + residual)` in the normalize pass
//! (ResNet's BN-add-ReLU), and its backward.
//!
//! Forward saves the output when there is a ReLU (its mask is `y > 0`, as
//! in PyTorch's ReLU backward). Backward first takes the output gradient
//! through the epilogue, `g = dy * !(y <= 0)` with a ReLU (else `g = dy`),
//! one elementwise pass that writes `grad_residual = g` (or a scratch
//! tensor without a residual); then batch norm's backward runs on `g`.

use super::{BatchNorm, Saved};
use crate::error::{Error, Result};
pub(crate) use crate::gpu::params::{EPILOGUE_RELU, EPILOGUE_RESIDUAL};
use crate::gpu::tensor::Tensor;
use crate::types::SpatialRank;

/// The activation applied after batch norm (and the residual add).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// None: `y = bn(x) + residual`.
    #[default]
    Identity,
    /// `y = max(bn(x) + residual, 0)` (NaN stays NaN, as `torch.relu`).
    Relu,
}

/// What the normalize pass applies after batch norm:
/// `y = activation(bn(x) + residual)`.
///
/// ```
/// use wgpu_batchnorm::{Activation, Epilogue};
/// let e = Epilogue::relu();
/// assert_eq!(e.activation, Activation::Relu);
/// assert!(e.residual.is_none());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added before the activation; same shape, dtype and memory format
    /// as the input.
    pub residual: Option<&'a Tensor>,
    /// The activation.
    pub activation: Activation,
}

impl<'a> Epilogue<'a> {
    /// No residual, no activation: plain batch norm.
    pub fn none() -> Self {
        Self::default()
    }

    /// A ReLU after batch norm.
    pub fn relu() -> Self {
        Self {
            residual: None,
            activation: Activation::Relu,
        }
    }

    /// This epilogue with `residual` added before the activation.
    pub fn with_residual(self, residual: &'a Tensor) -> Self {
        Self {
            residual: Some(residual),
            ..self
        }
    }

    /// The pipeline constant's bits.
    pub(crate) fn bits(&self) -> u32 {
        let mut bits = 0;
        if self.residual.is_some() {
            bits |= EPILOGUE_RESIDUAL;
        }
        if self.activation == Activation::Relu {
            bits |= EPILOGUE_RELU;
        }
        bits
    }
}

/// What a fused forward leaves for backward.
#[derive(Clone)]
pub(crate) struct SavedEpilogue {
    pub bits: u32,
    /// The output and the write mark after the forward wrote it (for the
    /// ReLU mask).
    pub output: Option<(Tensor, u64)>,
}

impl SavedEpilogue {
    pub fn has_residual(&self) -> bool {
        self.bits & EPILOGUE_RESIDUAL != 0
    }
}

/// What a backward through a fused epilogue needs: the `EPILOGUE` bits,
/// the forward's output (for a ReLU's mask) and where `g` goes.
pub(crate) struct Fused {
    pub bits: u32,
    pub output: Option<Tensor>,
    pub target: Tensor,
}

impl<R: SpatialRank> BatchNorm<R> {
    /// Checks a backward through the saved forward's epilogue: its output
    /// unchanged, `grad_residual` given where the forward had a residual
    /// (and not otherwise). `None` for a forward without an epilogue.
    pub(super) fn fused_backward(
        &mut self,
        saved: &Saved,
        dy: &Tensor,
        grad_residual: Option<&Tensor>,
    ) -> Result<Option<Fused>> {
        let Some(e) = &saved.epilogue else {
            return match grad_residual {
                None => Ok(None),
                Some(_) => Err(Error::NotAvailable {
                    name: "grad_residual",
                    reason: "the last forward had no residual",
                }),
            };
        };
        if let Some((y, mark)) = &e.output {
            if y.written_since(*mark) {
                return Err(Error::ModifiedSinceForward { what: "output" });
            }
        }
        let target = match (e.has_residual(), grad_residual) {
            (true, Some(t)) => {
                self.check_output("grad_residual", t, dy)?;
                let output = e.output.as_ref().map(|(y, _)| y);
                if t.shares_buffer(dy)
                    || t.shares_buffer(&saved.input)
                    || output.is_some_and(|y| t.shares_buffer(y))
                {
                    return Err(Error::Aliasing {
                        what: "grad_residual",
                    });
                }
                t.clone()
            }
            (true, None) => {
                return Err(Error::NotAvailable {
                    name: "grad_residual",
                    reason: "the last forward added a residual; its gradient needs a tensor",
                })
            }
            (false, Some(_)) => {
                return Err(Error::NotAvailable {
                    name: "grad_residual",
                    reason: "the last forward had no residual",
                })
            }
            (false, None) => self.ws.output_grad_scratch(&self.ctx, dy)?,
        };
        Ok(Some(Fused {
            bits: e.bits,
            output: e.output.as_ref().map(|(y, _)| y.clone()),
            target,
        }))
    }
}
