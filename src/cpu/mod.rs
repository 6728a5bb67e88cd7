//! CPU reference implementation of batch norm on host slices, for every
//! rank and memory format.
//!
//! Same semantics, validation and state rules as the GPU module (the rules
//! live in one place, shared by both), with every accumulation in f64 and
//! PyTorch's two-pass statistics (`mean = sum(x) / n`,
//! `var = sum((x - mean)^2) / n`). Running statistics are rounded to f32
//! after each update, as a float32 PyTorch module's buffers are. It is the
//! oracle for the GPU tests and usable on its own.
//!
//! ```
//! use wgpu_batchnorm::{cpu, BatchNormConfig};
//! let mut bn = cpu::BatchNorm1d::new(BatchNormConfig::new(3)).unwrap();
//! let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
//! let y = bn.forward(&x, &[3, 3]).unwrap();
//! assert!((y[0] + 1.2247).abs() < 1e-4);
//! assert!((bn.running_var().unwrap()[0] - 1.8).abs() < 1e-6);
//! ```

mod epilogue;
mod layout;

use std::marker::PhantomData;

use crate::config::BatchNormConfig;
use crate::error::{Error, Result};
use crate::semantics::{self, Layout};
use crate::types::{MemoryFormat, Rank1d, Rank2d, Rank3d, SpatialRank};
use layout::{channel_sums, map_channels, map_channels2, to_f32, to_f64};

/// Gradients from [`BatchNorm::backward`].
#[derive(Debug, Clone, PartialEq)]
pub struct CpuGradients {
    /// d loss / d input, in the input's storage order.
    pub grad_input: Vec<f32>,
    /// d loss / d weight; `Some` iff affine.
    pub grad_weight: Option<Vec<f32>>,
    /// d loss / d bias; `Some` iff affine.
    pub grad_bias: Option<Vec<f32>>,
    /// d loss / d residual; `Some` iff the forward added one
    /// ([`BatchNorm::forward_fused`]).
    pub grad_residual: Option<Vec<f32>>,
}

/// `(grad_input, grad_weight, grad_bias)` in f64.
pub type GradsF64 = (Vec<f64>, Option<Vec<f64>>, Option<Vec<f64>>);

#[derive(Debug, Clone)]
struct Saved {
    x: Vec<f64>,
    shape: Vec<usize>,
    layout: Layout,
    mean: Vec<f64>,
    invstd: Vec<f64>,
    /// The weight the forward used (backward differentiates that forward).
    weight: Vec<f64>,
    batch_stats: bool,
    empty: bool,
    /// The fused epilogue of the forward, if any.
    epilogue: Option<epilogue::SavedEpilogue>,
}

/// The reference module for inputs of rank `R` (aliases
/// [`BatchNorm1d`], [`BatchNorm2d`], [`BatchNorm3d`]).
#[derive(Debug)]
pub struct BatchNorm<R: SpatialRank = Rank1d> {
    cfg: BatchNormConfig,
    training: bool,
    weight: Vec<f64>,
    bias: Vec<f64>,
    running_mean: Vec<f64>,
    running_var: Vec<f64>,
    num_batches_tracked: u64,
    saved: Option<Saved>,
    _rank: PhantomData<R>,
}

impl<R: SpatialRank> Clone for BatchNorm<R> {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            training: self.training,
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            running_mean: self.running_mean.clone(),
            running_var: self.running_var.clone(),
            num_batches_tracked: self.num_batches_tracked,
            saved: self.saved.clone(),
            _rank: PhantomData,
        }
    }
}

/// Reference `BatchNorm1d`.
pub type BatchNorm1d = BatchNorm<Rank1d>;
/// Reference `BatchNorm2d`.
pub type BatchNorm2d = BatchNorm<Rank2d>;
/// Reference `BatchNorm3d`.
pub type BatchNorm3d = BatchNorm<Rank3d>;

impl<R: SpatialRank> BatchNorm<R> {
    /// A module in training mode with PyTorch's initial values.
    pub fn new(cfg: BatchNormConfig) -> Result<Self> {
        cfg.validate()?;
        let nf = cfg.num_features;
        Ok(Self {
            cfg,
            training: true,
            weight: vec![1.0; nf],
            bias: vec![0.0; nf],
            running_mean: vec![0.0; nf],
            running_var: vec![1.0; nf],
            num_batches_tracked: 0,
            saved: None,
            _rank: PhantomData,
        })
    }

    /// Training mode.
    pub fn train(&mut self) {
        self.training = true;
    }

    /// Eval mode.
    pub fn eval(&mut self) {
        self.training = false;
    }

    /// Whether the module is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The configuration.
    pub fn config(&self) -> &BatchNormConfig {
        &self.cfg
    }

    /// Batches seen in training mode.
    pub fn num_batches_tracked(&self) -> u64 {
        self.num_batches_tracked
    }

    /// Sets num_batches_tracked.
    pub fn set_num_batches_tracked(&mut self, value: u64) {
        self.num_batches_tracked = value;
    }

    /// Weight, `Some` iff affine.
    pub fn weight(&self) -> Option<Vec<f32>> {
        self.cfg.affine.then(|| to_f32(&self.weight))
    }

    /// Bias, `Some` iff affine.
    pub fn bias(&self) -> Option<Vec<f32>> {
        self.cfg.affine.then(|| to_f32(&self.bias))
    }

    /// Running mean, `Some` iff tracked.
    pub fn running_mean(&self) -> Option<Vec<f32>> {
        let t = self.cfg.track_running_stats;
        t.then(|| to_f32(&self.running_mean))
    }

    /// Running variance, `Some` iff tracked.
    pub fn running_var(&self) -> Option<Vec<f32>> {
        let t = self.cfg.track_running_stats;
        t.then(|| to_f32(&self.running_var))
    }

    fn set(name: &'static str, ok: bool, dst: &mut Vec<f64>, values: &[f32]) -> Result<()> {
        if !ok {
            let reason = match name {
                "weight" | "bias" => "the module is not affine",
                _ => "the module does not track running statistics",
            };
            return Err(Error::NotAvailable { name, reason });
        }
        semantics::check_len(name, values, dst.len())?;
        *dst = to_f64(values);
        Ok(())
    }

    /// Sets the weight.
    pub fn set_weight(&mut self, values: &[f32]) -> Result<()> {
        Self::set("weight", self.cfg.affine, &mut self.weight, values)
    }

    /// Sets the bias.
    pub fn set_bias(&mut self, values: &[f32]) -> Result<()> {
        Self::set("bias", self.cfg.affine, &mut self.bias, values)
    }

    /// Sets the running mean.
    pub fn set_running_mean(&mut self, values: &[f32]) -> Result<()> {
        let t = self.cfg.track_running_stats;
        Self::set("running_mean", t, &mut self.running_mean, values)
    }

    /// Sets the running variance.
    pub fn set_running_var(&mut self, values: &[f32]) -> Result<()> {
        let t = self.cfg.track_running_stats;
        Self::set("running_var", t, &mut self.running_var, values)
    }

    /// Resets running statistics and num_batches_tracked.
    pub fn reset_running_stats(&mut self) {
        let nf = self.cfg.num_features;
        self.running_mean = vec![0.0; nf];
        self.running_var = vec![1.0; nf];
        self.num_batches_tracked = 0;
    }

    /// Resets the running statistics, weight 1 and bias 0.
    pub fn reset_parameters(&mut self) {
        let nf = self.cfg.num_features;
        self.reset_running_stats();
        self.weight = vec![1.0; nf];
        self.bias = vec![0.0; nf];
    }
}

// Forward and backward.
impl<R: SpatialRank> BatchNorm<R> {
    /// Forward pass on channels-first `x` of logical `shape`.
    pub fn forward(&mut self, x: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        self.forward_with_format(x, shape, MemoryFormat::ChannelsFirst)
    }

    /// Forward pass on `x` stored in `format` (output in the same order).
    pub fn forward_with_format(
        &mut self,
        x: &[f32],
        shape: &[usize],
        format: MemoryFormat,
    ) -> Result<Vec<f32>> {
        self.forward_f64_with_format(&to_f64(x), shape, format)
            .map(|y| to_f32(&y))
    }

    /// Forward pass entirely in f64 (used for finite-difference checks).
    pub fn forward_f64(&mut self, x: &[f64], shape: &[usize]) -> Result<Vec<f64>> {
        self.forward_f64_with_format(x, shape, MemoryFormat::ChannelsFirst)
    }

    /// [`BatchNorm::forward_f64`] for `x` stored in `format`.
    pub fn forward_f64_with_format(
        &mut self,
        x: &[f64],
        shape: &[usize],
        format: MemoryFormat,
    ) -> Result<Vec<f64>> {
        let plan = semantics::plan_forward(&self.cfg, R::RANK, self.training, shape, format, None)?;
        let lay = plan.layout;
        if x.len() != lay.numel() {
            return Err(Error::LengthMismatch {
                name: "input",
                expected: lay.numel(),
                actual: x.len(),
            });
        }
        let nbt = semantics::next_batch_count(self.num_batches_tracked, plan.track_step)?;
        let c = lay.c;
        let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
        if !plan.empty && plan.batch_stats {
            let n = lay.per_channel() as f64;
            mean = channel_sums(&lay, x, |_, v| v)
                .iter()
                .map(|s| s / n)
                .collect();
            let dev = |ch: usize, v: f64| (v - mean.get(ch).copied().unwrap_or(0.0)).powi(2);
            var = channel_sums(&lay, x, dev).iter().map(|s| s / n).collect();
            if plan.track_step {
                let f = semantics::momentum_factor(&self.cfg, nbt);
                let stats = mean.iter().zip(&var);
                let running = self
                    .running_mean
                    .iter_mut()
                    .zip(self.running_var.iter_mut());
                for ((rm, rv), (&m, &v)) in running.zip(stats) {
                    // Buffers are f32, as in a float32 PyTorch module (a
                    // variance past f32's range becomes inf there too).
                    *rm = f64::from(((1.0 - f) * *rm + f * m) as f32);
                    *rv = f64::from(((1.0 - f) * *rv + f * (v * n / (n - 1.0))) as f32);
                }
            }
        } else if !plan.empty {
            mean = self.running_mean.clone();
            var = self.running_var.clone();
        }
        // PyTorch adds eps in the input's type: as an f32 (the GPU kernels
        // too), which matters where var + eps cancels to 0 or eps is tiny.
        let eps = f64::from(self.cfg.eps_f32());
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let (affine, w, b) = (self.cfg.affine, &self.weight, &self.bias);
        let y = map_channels(&lay, x, |ch, v| {
            let (m, s) = (mean.get(ch), invstd.get(ch));
            let (g, bb) = if affine {
                (w.get(ch).copied(), b.get(ch).copied())
            } else {
                (Some(1.0), Some(0.0))
            };
            match (m, s, g, bb) {
                (Some(m), Some(s), Some(g), Some(bb)) => (v - m) * s * g + bb,
                _ => f64::NAN,
            }
        });
        self.num_batches_tracked = nbt;
        self.saved = Some(Saved {
            x: x.to_vec(),
            shape: shape.to_vec(),
            layout: lay,
            mean,
            invstd,
            weight: self.weight.clone(),
            batch_stats: plan.batch_stats,
            empty: plan.empty,
            epilogue: None,
        });
        Ok(y)
    }

    /// Gradients of the most recent successful forward for `grad_output`
    /// (in the forward input's storage order), with the parameters that
    /// forward used.
    pub fn backward(&self, grad_output: &[f32]) -> Result<CpuGradients> {
        let dy = to_f64(grad_output);
        let (dx, gw, gb) = self.backward_f64(&dy)?;
        let grad_residual = self.through_epilogue(dy)?.1.map(|g| to_f32(&g));
        Ok(CpuGradients {
            grad_input: to_f32(&dx),
            grad_weight: gw.map(|g| to_f32(&g)),
            grad_bias: gb.map(|g| to_f32(&g)),
            grad_residual,
        })
    }

    /// Backward in f64: `(grad_input, grad_weight, grad_bias)` (through the
    /// forward's epilogue, if any).
    pub fn backward_f64(&self, grad_output: &[f64]) -> Result<GradsF64> {
        let (dy, _) = self.through_epilogue(grad_output.to_vec())?;
        let grad_output = dy.as_slice();
        let s = self.saved.as_ref().ok_or(Error::NoForward)?;
        let lay = s.layout;
        if grad_output.len() != s.x.len() {
            return Err(Error::LengthMismatch {
                name: "grad_output",
                expected: s.x.len(),
                actual: grad_output.len(),
            });
        }
        let gc = if s.empty && self.cfg.affine {
            self.cfg.num_features
        } else {
            lay.c
        };
        let mut dx = vec![0.0f64; s.x.len()];
        let (mut gw, mut gb) = (vec![0.0f64; gc], vec![0.0f64; gc]);
        if !s.empty {
            let n = lay.per_channel() as f64;
            let at = |v: &[f64], ch: usize| v.get(ch).copied().unwrap_or(f64::NAN);
            let xhat = |ch: usize, x: f64| (x - at(&s.mean, ch)) * at(&s.invstd, ch);
            gb = channel_sums(&lay, grad_output, |_, g| g);
            let pairs = map_channels2(&lay, &s.x, grad_output, |ch, x, g| g * xhat(ch, x));
            gw = channel_sums(&lay, &pairs, |_, p| p);
            let affine = self.cfg.affine;
            let scale =
                |ch: usize| at(&s.invstd, ch) * if affine { at(&s.weight, ch) } else { 1.0 };
            dx = map_channels2(&lay, &s.x, grad_output, |ch, x, g| {
                if s.batch_stats {
                    scale(ch) * (g - at(&gb, ch) / n - xhat(ch, x) * at(&gw, ch) / n)
                } else {
                    scale(ch) * g
                }
            });
        }
        let affine = self.cfg.affine;
        Ok((dx, affine.then_some(gw), affine.then_some(gb)))
    }

    /// Logical shape of the last successful forward's input.
    pub fn last_shape(&self) -> Option<&[usize]> {
        self.saved.as_ref().map(|s| s.shape.as_slice())
    }
}
