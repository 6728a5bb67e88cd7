//! `.safetensors` checkpoints with PyTorch's names under a key prefix such
//! as `"bn1."`: what `safetensors.torch.save_file(model.state_dict(), path)`
//! writes loads directly, and files written here load in PyTorch.
//!
//! Float entries may be F32, F16, BF16 or F64 (a model after `.half()`,
//! `.bfloat16()` or `.double()`); they are converted to the module's f32
//! state, and the file's type is remembered so a save can write it back.
//! `num_batches_tracked` is an I64 scalar, as PyTorch stores it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::state_dict::{FloatDtype, StateDict};
use super::{BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, SpatialRank};
use crate::config::BatchNormConfig;
use crate::error::{CheckpointProblem, Error, Result};
use crate::gpu::context::GpuContext;
use crate::types::Rank;

fn err(e: safetensors::SafeTensorError) -> Error {
    Error::checkpoint(CheckpointProblem::Format, None, e.to_string())
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::checkpoint(
            CheckpointProblem::Io,
            None,
            format!("{}: {e}", path.display()),
        )
    })
}

fn float_dtype(d: Dtype) -> Option<FloatDtype> {
    match d {
        Dtype::F32 => Some(FloatDtype::F32),
        Dtype::F16 => Some(FloatDtype::F16),
        Dtype::BF16 => Some(FloatDtype::BF16),
        Dtype::F64 => Some(FloatDtype::F64),
        _ => None,
    }
}

/// Decodes little-endian `bytes` of `dtype` as f32.
fn decode(bytes: &[u8], dtype: FloatDtype) -> Vec<f32> {
    match dtype {
        FloatDtype::F32 => bytemuck::pod_collect_to_vec(bytes),
        FloatDtype::F64 => bytemuck::pod_collect_to_vec::<u8, f64>(bytes)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        FloatDtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes)
            .into_iter()
            .map(half::f16::to_f32)
            .collect(),
        FloatDtype::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(bytes)
            .into_iter()
            .map(half::bf16::to_f32)
            .collect(),
    }
}

/// Encodes `values` as little-endian bytes of `dtype`.
fn encode(values: &[f32], dtype: FloatDtype) -> (Dtype, Vec<u8>) {
    match dtype {
        FloatDtype::F32 => (Dtype::F32, bytemuck::cast_slice(values).to_vec()),
        FloatDtype::F64 => {
            let v: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
            (Dtype::F64, bytemuck::cast_slice(&v).to_vec())
        }
        FloatDtype::F16 => {
            let v: Vec<half::f16> = values.iter().map(|&x| half::f16::from_f32(x)).collect();
            (Dtype::F16, bytemuck::cast_slice(&v).to_vec())
        }
        FloatDtype::BF16 => {
            let v: Vec<half::bf16> = values.iter().map(|&x| half::bf16::from_f32(x)).collect();
            (Dtype::BF16, bytemuck::cast_slice(&v).to_vec())
        }
    }
}

impl StateDict {
    /// Serialises to `.safetensors` bytes in [`StateDict::dtype`], each key
    /// prefixed by `prefix`.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let encoded: Vec<(String, Dtype, usize, Vec<u8>)> = self
            .vectors()
            .into_iter()
            .filter_map(|(name, v)| {
                v.as_ref().map(|v| {
                    let (dtype, bytes) = encode(v, self.dtype);
                    (format!("{prefix}{name}"), dtype, v.len(), bytes)
                })
            })
            .collect();
        let nbt = match self.num_batches_tracked {
            Some(n) => Some(
                i64::try_from(n)
                    .map_err(|_| {
                        let key = format!("{prefix}num_batches_tracked");
                        Error::checkpoint(
                            CheckpointProblem::Value,
                            Some(&key),
                            format!("{key} {n} does not fit the file's int64"),
                        )
                    })?
                    .to_le_bytes(),
            ),
            None => None,
        };
        let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
        for (key, dtype, len, bytes) in &encoded {
            views.push((
                key.clone(),
                TensorView::new(*dtype, vec![*len], bytes).map_err(err)?,
            ));
        }
        if let Some(bytes) = &nbt {
            let view = TensorView::new(Dtype::I64, vec![], bytes).map_err(err)?;
            views.push((format!("{prefix}num_batches_tracked"), view));
        }
        safetensors::serialize(views, None::<HashMap<String, String>>).map_err(err)
    }

    /// Reads the entries under `prefix` that a module with `affine` and
    /// `track_running_stats` needs from `.safetensors` bytes. Float
    /// entries of F32, F16, BF16 or F64 are converted to f32 (and
    /// [`StateDict::dtype`] records the type); any other type, a shape
    /// other than `[C]`, or a missing key is an error, except
    /// `num_batches_tracked`, which may be missing (see
    /// [`BatchNorm::load_state_dict`]).
    pub fn from_safetensors(
        bytes: &[u8],
        prefix: &str,
        affine: bool,
        track_running_stats: bool,
    ) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(err)?;
        Self::read(&st, prefix, affine, track_running_stats)
    }

    fn read(st: &SafeTensors<'_>, prefix: &str, affine: bool, track: bool) -> Result<Self> {
        let mut sd = StateDict::default();
        let mut dtype = None;
        let mut floats = |name: &str| -> Result<Vec<f32>> {
            let key = format!("{prefix}{name}");
            let t = st.tensor(&key).map_err(|_| Error::missing_key(&key))?;
            let d = float_dtype(t.dtype()).ok_or_else(|| {
                Error::checkpoint(
                    CheckpointProblem::DType,
                    Some(&key),
                    format!(
                        "{key:?} has dtype {:?}; expected F32, F16, BF16 or F64",
                        t.dtype()
                    ),
                )
            })?;
            if t.shape().len() != 1 {
                return Err(Error::checkpoint(
                    CheckpointProblem::Shape,
                    Some(&key),
                    format!("{key:?} has shape {:?}, expected [C]", t.shape()),
                ));
            }
            dtype.get_or_insert(d);
            Ok(decode(t.data(), d))
        };
        if affine {
            sd.weight = Some(floats("weight")?);
            sd.bias = Some(floats("bias")?);
        }
        if track {
            sd.running_mean = Some(floats("running_mean")?);
            sd.running_var = Some(floats("running_var")?);
            sd.num_batches_tracked = read_count(st, prefix)?;
        }
        sd.dtype = dtype.unwrap_or_default();
        Ok(sd)
    }
}

/// `{prefix}num_batches_tracked`, where present: an I64 (or I32) scalar,
/// not negative.
fn read_count(st: &SafeTensors<'_>, prefix: &str) -> Result<Option<u64>> {
    let key = format!("{prefix}num_batches_tracked");
    let Ok(t) = st.tensor(&key) else {
        return Ok(None);
    };
    let scalar = matches!(t.shape(), [] | [1]);
    let n = match (t.dtype(), scalar) {
        (Dtype::I64, true) => t.data().try_into().ok().map(i64::from_le_bytes),
        (Dtype::I32, true) => t
            .data()
            .try_into()
            .ok()
            .map(|b| i64::from(i32::from_le_bytes(b))),
        _ => None,
    }
    .ok_or_else(|| {
        Error::checkpoint(
            CheckpointProblem::DType,
            Some(&key),
            format!(
                "{key:?} has dtype {:?} and shape {:?}, expected an I64 scalar",
                t.dtype(),
                t.shape()
            ),
        )
    })?;
    u64::try_from(n).map(Some).map_err(|_| {
        Error::checkpoint(
            CheckpointProblem::Value,
            Some(&key),
            format!("{key:?} is negative ({n})"),
        )
    })
}

impl<R: SpatialRank> BatchNorm<R> {
    /// Writes the state dict to a `.safetensors` file in f32, keys prefixed
    /// by `prefix` (e.g. `"bn1."`, or `""`).
    pub fn save_safetensors(&self, path: impl AsRef<Path>, prefix: &str) -> Result<()> {
        self.save_safetensors_as(path, prefix, FloatDtype::F32)
    }

    /// Writes the state dict as `dtype` (for example
    /// [`BatchNorm::checkpoint_dtype`], the type of the file last loaded).
    pub fn save_safetensors_as(
        &self,
        path: impl AsRef<Path>,
        prefix: &str,
        dtype: FloatDtype,
    ) -> Result<()> {
        let _span = crate::trace::span!("BatchNorm::save_safetensors");
        let mut sd = self.state_dict()?;
        sd.dtype = dtype;
        let bytes = sd.to_safetensors(prefix)?;
        std::fs::write(path.as_ref(), bytes).map_err(|e| {
            let detail = format!("{}: {e}", path.as_ref().display());
            Error::checkpoint(CheckpointProblem::Io, None, detail)
        })
    }

    /// Loads the entries under `prefix` from a `.safetensors` file (other
    /// keys, such as other layers', are ignored). Missing keys (but
    /// `num_batches_tracked`: [`BatchNorm::load_state_dict`]), wrong
    /// shapes and unsupported dtypes are errors, and then nothing changes.
    pub fn load_safetensors(&mut self, path: impl AsRef<Path>, prefix: &str) -> Result<()> {
        let _span = crate::trace::span!("BatchNorm::load_safetensors");
        let bytes = read_file(path.as_ref())?;
        let (affine, track) = (self.cfg.affine, self.cfg.track_running_stats);
        let sd = StateDict::from_safetensors(&bytes, prefix, affine, track)?;
        self.load_state_dict(&sd)?;
        self.checkpoint_dtype = sd.dtype;
        Ok(())
    }

    /// The float type of the last checkpoint loaded (F32 before any).
    pub fn checkpoint_dtype(&self) -> FloatDtype {
        self.checkpoint_dtype
    }
}

/// A batch-norm module of any rank, as loaded from a model file.
#[derive(Debug)]
pub enum AnyBatchNorm {
    /// `BatchNorm1d`.
    D1(BatchNorm1d),
    /// `BatchNorm2d`.
    D2(BatchNorm2d),
    /// `BatchNorm3d`.
    D3(BatchNorm3d),
}

impl AnyBatchNorm {
    /// The module's rank.
    pub fn rank(&self) -> Rank {
        match self {
            AnyBatchNorm::D1(_) => Rank::D1,
            AnyBatchNorm::D2(_) => Rank::D2,
            AnyBatchNorm::D3(_) => Rank::D3,
        }
    }

    /// The module's configuration.
    pub fn config(&self) -> &BatchNormConfig {
        match self {
            AnyBatchNorm::D1(m) => m.config(),
            AnyBatchNorm::D2(m) => m.config(),
            AnyBatchNorm::D3(m) => m.config(),
        }
    }

    /// The module's state.
    pub fn state_dict(&self) -> Result<StateDict> {
        match self {
            AnyBatchNorm::D1(m) => m.state_dict(),
            AnyBatchNorm::D2(m) => m.state_dict(),
            AnyBatchNorm::D3(m) => m.state_dict(),
        }
    }
}

/// The key prefixes of the batch-norm layers in `.safetensors` bytes
/// (e.g. `["bn1.", "features.1."]`), sorted: every prefix with 1-D
/// `running_mean` and `running_var` (with or without a
/// `num_batches_tracked`, which converters that keep only float tensors
/// drop). (Layers without running statistics hold only `weight` and
/// `bias`, which other layers have too, so they cannot be told apart.)
pub fn batch_norm_prefixes(bytes: &[u8]) -> Result<Vec<String>> {
    let st = SafeTensors::deserialize(bytes).map_err(err)?;
    let names = st.names();
    let is_vector = |key: &str| st.tensor(key).is_ok_and(|t| t.shape().len() == 1);
    let mut prefixes: Vec<String> = names
        .iter()
        .filter_map(|k| k.strip_suffix("running_mean"))
        .filter(|p| is_vector(&format!("{p}running_mean")) && is_vector(&format!("{p}running_var")))
        .map(str::to_string)
        .collect();
    prefixes.sort();
    Ok(prefixes)
}

/// Loads every batch-norm layer of a model's `.safetensors` file into
/// modules on `ctx`, keyed by prefix. The file does not say a layer's rank
/// or `eps`/`momentum`: `spec(prefix)` gives the rank and configuration
/// (its `num_features` and flags are taken from the file), or `None` to
/// skip the layer. Each module is loaded strictly, as
/// [`BatchNorm::load_safetensors`] does.
pub fn load_batch_norms(
    ctx: &GpuContext,
    path: impl AsRef<Path>,
    spec: impl Fn(&str) -> Option<(Rank, BatchNormConfig)>,
) -> Result<BTreeMap<String, AnyBatchNorm>> {
    let _span = crate::trace::span!("load_batch_norms");
    let bytes = read_file(path.as_ref())?;
    let st = SafeTensors::deserialize(&bytes).map_err(err)?;
    let mut out = BTreeMap::new();
    for prefix in batch_norm_prefixes(&bytes)? {
        let Some((rank, cfg)) = spec(&prefix) else {
            continue;
        };
        // Either parameter makes the layer affine; reading it strictly
        // then reports the other if it is missing (never a dropped weight).
        let affine = st.tensor(&format!("{prefix}weight")).is_ok()
            || st.tensor(&format!("{prefix}bias")).is_ok();
        let sd = StateDict::read(&st, &prefix, affine, true)?;
        let c = sd.running_mean.as_ref().map_or(0, Vec::len);
        let cfg = BatchNormConfig {
            num_features: c,
            affine,
            track_running_stats: true,
            ..cfg
        };
        let module = match rank {
            Rank::D1 => AnyBatchNorm::D1(loaded(ctx, cfg, &sd)?),
            Rank::D2 => AnyBatchNorm::D2(loaded(ctx, cfg, &sd)?),
            Rank::D3 => AnyBatchNorm::D3(loaded(ctx, cfg, &sd)?),
        };
        out.insert(prefix, module);
    }
    Ok(out)
}

fn loaded<R: SpatialRank>(
    ctx: &GpuContext,
    cfg: BatchNormConfig,
    sd: &StateDict,
) -> Result<BatchNorm<R>> {
    let mut m = BatchNorm::<R>::new(ctx, cfg)?;
    m.load_state_dict(sd)?;
    m.checkpoint_dtype = sd.dtype;
    Ok(m)
}
