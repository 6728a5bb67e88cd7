//! PyTorch-compatible checkpoints: [`StateDict`] with PyTorch's names
//! (`weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`)
//! and `.safetensors` files with a key prefix such as `"bn1."`.
//!
//! Floats are stored as F32 of shape `[C]`; `num_batches_tracked` as I64 of
//! shape `[]`, as `torch.nn.BatchNorm1d.state_dict()` has them, so a file
//! written by `safetensors.torch.save_file(bn.state_dict(), path)` loads
//! directly, and files written here load in PyTorch.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::batch_norm::BatchNorm1d;
use crate::error::{Error, Result};

/// A module's state under PyTorch's names; `None` where the module has no
/// such entry (not affine, or not tracking running statistics).
#[derive(Debug, Clone, PartialEq, Default)]
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
}

impl StateDict {
    /// The PyTorch names present, in PyTorch's order.
    pub fn keys(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        for (name, present) in [
            ("weight", self.weight.is_some()),
            ("bias", self.bias.is_some()),
            ("running_mean", self.running_mean.is_some()),
            ("running_var", self.running_var.is_some()),
            ("num_batches_tracked", self.num_batches_tracked.is_some()),
        ] {
            if present {
                k.push(name);
            }
        }
        k
    }

    /// Serialises to `.safetensors` bytes, each key prefixed by `prefix`.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let nbt = self.num_batches_tracked.map(|n| (n as i64).to_le_bytes());
        let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
        let err = |e: safetensors::SafeTensorError| Error::Checkpoint(e.to_string());
        for (name, v) in [
            ("weight", &self.weight),
            ("bias", &self.bias),
            ("running_mean", &self.running_mean),
            ("running_var", &self.running_var),
        ] {
            if let Some(v) = v {
                let view = TensorView::new(Dtype::F32, vec![v.len()], bytemuck::cast_slice(v))
                    .map_err(err)?;
                views.push((format!("{prefix}{name}"), view));
            }
        }
        if let Some(bytes) = &nbt {
            let view = TensorView::new(Dtype::I64, vec![], bytes).map_err(err)?;
            views.push((format!("{prefix}num_batches_tracked"), view));
        }
        safetensors::serialize(views, None::<HashMap<String, String>>).map_err(err)
    }

    /// Reads the entries under `prefix` that a module with `affine` and
    /// `track_running_stats` needs from `.safetensors` bytes.
    pub fn from_safetensors(
        bytes: &[u8],
        prefix: &str,
        affine: bool,
        track_running_stats: bool,
    ) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Checkpoint(e.to_string()))?;
        let floats = |name: &str| -> Result<Vec<f32>> {
            let key = format!("{prefix}{name}");
            let t = st
                .tensor(&key)
                .map_err(|_| Error::Checkpoint(format!("missing key {key:?}")))?;
            if t.dtype() != Dtype::F32 {
                return Err(Error::Checkpoint(format!(
                    "{key:?} has dtype {:?}, expected F32",
                    t.dtype()
                )));
            }
            if t.shape().len() != 1 {
                return Err(Error::Checkpoint(format!(
                    "{key:?} has shape {:?}, expected [C]",
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let mut sd = StateDict::default();
        if affine {
            sd.weight = Some(floats("weight")?);
            sd.bias = Some(floats("bias")?);
        }
        if track_running_stats {
            sd.running_mean = Some(floats("running_mean")?);
            sd.running_var = Some(floats("running_var")?);
            let key = format!("{prefix}num_batches_tracked");
            let t = st
                .tensor(&key)
                .map_err(|_| Error::Checkpoint(format!("missing key {key:?}")))?;
            let n = match (t.dtype(), t.shape(), t.data()) {
                (Dtype::I64, [] | [1], d) if d.len() == 8 => {
                    i64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
                }
                (dtype, shape, _) => {
                    return Err(Error::Checkpoint(format!(
                        "{key:?} has dtype {dtype:?} and shape {shape:?}, expected an I64 scalar"
                    )))
                }
            };
            sd.num_batches_tracked = Some(
                u64::try_from(n)
                    .map_err(|_| Error::Checkpoint(format!("{key:?} is negative ({n})")))?,
            );
        }
        Ok(sd)
    }
}

impl BatchNorm1d {
    /// The module's state under PyTorch's names (reads back from the GPU).
    pub fn state_dict(&self) -> Result<StateDict> {
        let track = self.config().track_running_stats;
        Ok(StateDict {
            weight: self.weight()?,
            bias: self.bias()?,
            running_mean: self.running_mean()?,
            running_var: self.running_var()?,
            num_batches_tracked: track.then(|| self.num_batches_tracked()),
        })
    }

    /// Loads a state dict (strict, like PyTorch's default): exactly the
    /// entries this module has, each with `num_features` values. Everything
    /// is checked before anything is written.
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let cfg = self.config().clone();
        let nf = cfg.num_features;
        let check = |name: &str, v: &Option<Vec<f32>>, wanted: bool| -> Result<()> {
            match (v, wanted) {
                (Some(v), true) if v.len() == nf => Ok(()),
                (Some(v), true) => Err(Error::Checkpoint(format!(
                    "size mismatch for {name}: got {} values, the module has {nf}",
                    v.len()
                ))),
                (None, true) => Err(Error::Checkpoint(format!("missing key {name:?}"))),
                (Some(_), false) => Err(Error::Checkpoint(format!("unexpected key {name:?}"))),
                (None, false) => Ok(()),
            }
        };
        check("weight", &sd.weight, cfg.affine)?;
        check("bias", &sd.bias, cfg.affine)?;
        check("running_mean", &sd.running_mean, cfg.track_running_stats)?;
        check("running_var", &sd.running_var, cfg.track_running_stats)?;
        match (sd.num_batches_tracked, cfg.track_running_stats) {
            (None, true) => {
                return Err(Error::Checkpoint(
                    "missing key \"num_batches_tracked\"".into(),
                ))
            }
            (Some(_), false) => {
                return Err(Error::Checkpoint(
                    "unexpected key \"num_batches_tracked\"".into(),
                ))
            }
            _ => {}
        }
        if let (Some(w), Some(b)) = (&sd.weight, &sd.bias) {
            self.set_weight(w)?;
            self.set_bias(b)?;
        }
        if let (Some(m), Some(v)) = (&sd.running_mean, &sd.running_var) {
            self.set_running_mean(m)?;
            self.set_running_var(v)?;
        }
        if let Some(n) = sd.num_batches_tracked {
            self.set_num_batches_tracked(n);
        }
        Ok(())
    }

    /// Writes the state dict to a `.safetensors` file, keys prefixed by
    /// `prefix` (e.g. `"bn1."`, or `""`).
    pub fn save_safetensors(&self, path: impl AsRef<Path>, prefix: &str) -> Result<()> {
        let bytes = self.state_dict()?.to_safetensors(prefix)?;
        std::fs::write(path.as_ref(), bytes)
            .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.as_ref().display())))
    }

    /// Loads the entries under `prefix` from a `.safetensors` file (other
    /// keys, such as other layers', are ignored). Missing keys, wrong shapes
    /// and wrong dtypes are errors, and then nothing changes.
    pub fn load_safetensors(&mut self, path: impl AsRef<Path>, prefix: &str) -> Result<()> {
        let bytes = std::fs::read(path.as_ref())
            .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.as_ref().display())))?;
        let cfg = self.config();
        let sd = StateDict::from_safetensors(&bytes, prefix, cfg.affine, cfg.track_running_stats)?;
        self.load_state_dict(&sd)
    }
}
