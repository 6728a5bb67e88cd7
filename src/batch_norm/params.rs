//! The module's parameters and running statistics: one state buffer of
//! four `num_features` sections (weight, bias, running_mean,
//! running_var), its setters and getters.

use super::{BatchNorm, SpatialRank};
use crate::error::{Error, Result};
use crate::gpu::readback::read_f32;
use crate::semantics;

/// Which quarter of the state buffer.
#[derive(Clone, Copy)]
pub(super) enum Param {
    Weight = 0,
    Bias = 1,
    RunningMean = 2,
    RunningVar = 3,
}

impl Param {
    pub(super) fn name(self) -> &'static str {
        match self {
            Param::Weight => "weight",
            Param::Bias => "bias",
            Param::RunningMean => "running_mean",
            Param::RunningVar => "running_var",
        }
    }
}

impl<R: SpatialRank> BatchNorm<R> {
    /// Writes whole parameter vectors in one scope (all or nothing).
    pub(super) fn write_params(&mut self, values: &[(Param, &[f32])]) -> Result<()> {
        self.settle_terms()?;
        let nf = self.cfg.num_features as u64;
        self.ctx.scoped(|| {
            for (p, v) in values {
                let offset = (*p as u64) * nf * 4;
                self.ctx
                    .queue()
                    .write_buffer(&self.state.buffer, offset, bytemuck::cast_slice(v));
            }
            Ok(())
        })
    }

    fn available(&self, p: Param) -> Result<()> {
        let (ok, reason) = match p {
            Param::Weight | Param::Bias => (self.cfg.affine, "the module is not affine"),
            Param::RunningMean | Param::RunningVar => (
                self.cfg.track_running_stats,
                "the module does not track running statistics",
            ),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::NotAvailable {
                name: p.name(),
                reason,
            })
        }
    }

    fn set(&mut self, p: Param, values: &[f32]) -> Result<()> {
        self.available(p)?;
        semantics::check_len(p.name(), values, self.cfg.num_features)?;
        self.write_params(&[(p, values)])
    }

    fn get(&self, p: Param) -> Result<Option<Vec<f32>>> {
        if self.available(p).is_err() {
            self.ctx.check_alive()?;
            return Ok(None);
        }
        let nf = self.cfg.num_features;
        read_f32(
            &self.ctx,
            &self.state.buffer,
            (p as u64) * (nf as u64) * 4,
            nf,
        )
        .map(Some)
    }

    /// Sets the per-channel weight (gamma). Errors when not affine or on a
    /// length other than `num_features`.
    pub fn set_weight(&mut self, values: &[f32]) -> Result<()> {
        self.set(Param::Weight, values)
    }

    /// Sets the per-channel bias (beta).
    pub fn set_bias(&mut self, values: &[f32]) -> Result<()> {
        self.set(Param::Bias, values)
    }

    /// Sets running_mean. Errors when running statistics are not tracked.
    pub fn set_running_mean(&mut self, values: &[f32]) -> Result<()> {
        self.set(Param::RunningMean, values)
    }

    /// Sets running_var.
    pub fn set_running_var(&mut self, values: &[f32]) -> Result<()> {
        self.set(Param::RunningVar, values)
    }

    /// Sets num_batches_tracked (as when loading a checkpoint).
    pub fn set_num_batches_tracked(&mut self, value: u64) {
        self.num_batches_tracked = value;
    }

    /// The weight, `Some` iff affine (reads back from the GPU).
    pub fn weight(&self) -> Result<Option<Vec<f32>>> {
        self.get(Param::Weight)
    }

    /// The bias, `Some` iff affine.
    pub fn bias(&self) -> Result<Option<Vec<f32>>> {
        self.get(Param::Bias)
    }

    /// The running mean, `Some` iff `track_running_stats`.
    pub fn running_mean(&self) -> Result<Option<Vec<f32>>> {
        self.get(Param::RunningMean)
    }

    /// The running (unbiased) variance, `Some` iff `track_running_stats`.
    pub fn running_var(&self) -> Result<Option<Vec<f32>>> {
        self.get(Param::RunningVar)
    }
}
