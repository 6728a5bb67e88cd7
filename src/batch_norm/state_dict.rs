//! [`StateDict`]: a module's state under PyTorch's names (`weight`, `bias`,
//! `running_mean`, `running_var`, `num_batches_tracked`), and strict loading.

use super::{BatchNorm, Param, SpatialRank};
use crate::error::{CheckpointProblem, Error, Result};

/// Floating-point type of a checkpoint's tensors. The module's state is
/// f32 whatever the checkpoint holds; this says what a file had, or what to
/// write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FloatDtype {
    /// `torch.float32`.
    #[default]
    F32,
    /// `torch.float16` (after `model.half()`).
    F16,
    /// `torch.bfloat16` (after `model.bfloat16()`).
    BF16,
    /// `torch.float64` (after `model.double()`).
    F64,
}

/// A module's state under PyTorch's names; `None` where the module has no
/// such entry (not affine, or not tracking running statistics).
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StateDict {
    /// `weight` (gamma), `[C]`.
    pub weight: Option<Vec<f32>>,
    /// `bias` (beta), `[C]`.
    pub bias: Option<Vec<f32>>,
    /// `running_mean`, `[C]`.
    pub running_mean: Option<Vec<f32>>,
    /// `running_var`, `[C]`.
    pub running_var: Option<Vec<f32>>,
    /// `num_batches_tracked`, a scalar.
    pub num_batches_tracked: Option<u64>,
    /// The float type the entries were read as (from a file), or are to be
    /// written as (F32 when a serialized state dict leaves it out).
    #[cfg_attr(feature = "serde", serde(default))]
    pub dtype: FloatDtype,
}

impl StateDict {
    /// The PyTorch names present, in PyTorch's order.
    pub fn keys(&self) -> Vec<&'static str> {
        [
            ("weight", self.weight.is_some()),
            ("bias", self.bias.is_some()),
            ("running_mean", self.running_mean.is_some()),
            ("running_var", self.running_var.is_some()),
            ("num_batches_tracked", self.num_batches_tracked.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect()
    }

    /// The float vectors present, with their names.
    pub(crate) fn vectors(&self) -> [(&'static str, &Option<Vec<f32>>); 4] {
        [
            ("weight", &self.weight),
            ("bias", &self.bias),
            ("running_mean", &self.running_mean),
            ("running_var", &self.running_var),
        ]
    }
}

impl<R: SpatialRank> BatchNorm<R> {
    /// The module's state under PyTorch's names (reads back from the GPU),
    /// in f32.
    pub fn state_dict(&self) -> Result<StateDict> {
        let track = self.cfg.track_running_stats;
        Ok(StateDict {
            weight: self.weight()?,
            bias: self.bias()?,
            running_mean: self.running_mean()?,
            running_var: self.running_var()?,
            num_batches_tracked: track.then_some(self.num_batches_tracked),
            dtype: FloatDtype::F32,
        })
    }

    /// Loads a state dict (strict, like PyTorch's default): exactly the
    /// entries this module has, each with `num_features` values, except
    /// that a missing `num_batches_tracked` keeps the module's count, as
    /// PyTorch fills it in for state dicts without version metadata (such
    /// as a `.safetensors` file's). Everything is checked before anything
    /// is written, and the values are written in one step.
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let nf = self.cfg.num_features;
        let (affine, track) = (self.cfg.affine, self.cfg.track_running_stats);
        for (name, v) in sd.vectors() {
            let wanted = match name {
                "weight" | "bias" => affine,
                _ => track,
            };
            match (v, wanted) {
                (Some(v), true) if v.len() != nf => {
                    return Err(Error::checkpoint(
                        CheckpointProblem::Shape,
                        Some(name),
                        format!(
                            "size mismatch for {name}: got {} values, the module has {nf}",
                            v.len()
                        ),
                    ))
                }
                (None, true) => return Err(Error::missing_key(name)),
                (Some(_), false) => return Err(Error::unexpected_key(name)),
                _ => {}
            }
        }
        if sd.num_batches_tracked.is_some() && !track {
            return Err(Error::unexpected_key("num_batches_tracked"));
        }
        let mut writes = Vec::new();
        let params = [
            (Param::Weight, &sd.weight),
            (Param::Bias, &sd.bias),
            (Param::RunningMean, &sd.running_mean),
            (Param::RunningVar, &sd.running_var),
        ];
        for (p, v) in params {
            if let Some(v) = v {
                writes.push((p, v.as_slice()));
            }
        }
        self.write_params(&writes)?;
        if let Some(n) = sd.num_batches_tracked {
            self.num_batches_tracked = n;
        }
        Ok(())
    }
}
