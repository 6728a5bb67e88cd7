//! CPU reference implementation of `BatchNorm1d` on host slices.
//!
//! Same semantics, validation and state rules as the GPU module, with every
//! accumulation in f64 and PyTorch's two-pass statistics
//! (`mean = sum(x) / n`, `var = sum((x - mean)^2) / n`). Running statistics
//! are kept in f64 internally. It is the oracle for the GPU tests and usable
//! on its own.
//!
//! ```
//! use wgpu_batchnorm::{cpu, BatchNorm1dConfig};
//! let mut bn = cpu::BatchNorm1d::new(BatchNorm1dConfig::new(3)).unwrap();
//! let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
//! let y = bn.forward(&x, &[3, 3]).unwrap();
//! assert!((y[0] + 1.2247).abs() < 1e-4);
//! assert!((bn.running_var().unwrap()[0] - 1.8).abs() < 1e-6);
//! ```

use crate::config::BatchNorm1dConfig;
use crate::error::{Error, Result};
use crate::semantics::{self, Layout};

/// Gradients from [`BatchNorm1d::backward`].
#[derive(Debug, Clone, PartialEq)]
pub struct CpuGradients {
    /// d loss / d input.
    pub grad_input: Vec<f32>,
    /// d loss / d weight; `Some` iff affine.
    pub grad_weight: Option<Vec<f32>>,
    /// d loss / d bias; `Some` iff affine.
    pub grad_bias: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
struct Saved {
    x: Vec<f64>,
    shape: Vec<usize>,
    layout: Layout,
    mean: Vec<f64>,
    invstd: Vec<f64>,
    batch_stats: bool,
    empty: bool,
}

/// The reference module.
#[derive(Debug, Clone)]
pub struct BatchNorm1d {
    cfg: BatchNorm1dConfig,
    training: bool,
    weight: Vec<f64>,
    bias: Vec<f64>,
    running_mean: Vec<f64>,
    running_var: Vec<f64>,
    num_batches_tracked: u64,
    saved: Option<Saved>,
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

impl BatchNorm1d {
    /// A module in training mode with PyTorch's initial values.
    pub fn new(cfg: BatchNorm1dConfig) -> Result<Self> {
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

    /// The configuration.
    pub fn config(&self) -> &BatchNorm1dConfig {
        &self.cfg
    }

    /// Batches seen in training mode.
    pub fn num_batches_tracked(&self) -> u64 {
        self.num_batches_tracked
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
        self.cfg
            .track_running_stats
            .then(|| to_f32(&self.running_mean))
    }

    /// Running variance, `Some` iff tracked.
    pub fn running_var(&self) -> Option<Vec<f32>> {
        self.cfg
            .track_running_stats
            .then(|| to_f32(&self.running_var))
    }

    fn set(
        name: &'static str,
        available: bool,
        why: &'static str,
        dst: &mut Vec<f64>,
        values: &[f32],
    ) -> Result<()> {
        if !available {
            return Err(Error::NotAvailable(name, why));
        }
        semantics::check_len(name, values, dst.len())?;
        *dst = to_f64(values);
        Ok(())
    }

    /// Sets the weight.
    pub fn set_weight(&mut self, values: &[f32]) -> Result<()> {
        let a = self.cfg.affine;
        Self::set(
            "weight",
            a,
            "the module is not affine",
            &mut self.weight,
            values,
        )
    }

    /// Sets the bias.
    pub fn set_bias(&mut self, values: &[f32]) -> Result<()> {
        let a = self.cfg.affine;
        Self::set(
            "bias",
            a,
            "the module is not affine",
            &mut self.bias,
            values,
        )
    }

    /// Sets the running mean.
    pub fn set_running_mean(&mut self, values: &[f32]) -> Result<()> {
        let t = self.cfg.track_running_stats;
        let why = "the module does not track running statistics";
        Self::set("running_mean", t, why, &mut self.running_mean, values)
    }

    /// Sets the running variance.
    pub fn set_running_var(&mut self, values: &[f32]) -> Result<()> {
        let t = self.cfg.track_running_stats;
        let why = "the module does not track running statistics";
        Self::set("running_var", t, why, &mut self.running_var, values)
    }

    /// Resets running statistics and num_batches_tracked.
    pub fn reset_running_stats(&mut self) {
        let nf = self.cfg.num_features;
        self.running_mean = vec![0.0; nf];
        self.running_var = vec![1.0; nf];
        self.num_batches_tracked = 0;
    }

    /// Forward pass on row-major `x` of `shape` (`(N, C)` or `(N, C, L)`).
    pub fn forward(&mut self, x: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        self.forward_f64(&to_f64(x), shape).map(|y| to_f32(&y))
    }

    /// Forward pass entirely in f64 (used for finite-difference checks).
    pub fn forward_f64(&mut self, x: &[f64], shape: &[usize]) -> Result<Vec<f64>> {
        let plan = semantics::plan_forward(&self.cfg, self.training, shape)?;
        let lay = plan.layout;
        if x.len() != lay.numel() {
            return Err(Error::LengthMismatch {
                name: "input",
                expected: lay.numel(),
                actual: x.len(),
            });
        }
        let nbt = self.num_batches_tracked + u64::from(plan.track_step);
        let (mut mean, mut invstd) = (vec![0.0; lay.c], vec![0.0; lay.c]);
        let mut y = vec![0.0f64; x.len()];
        if !plan.empty {
            let eps = self.cfg.eps;
            let n = lay.per_channel() as f64;
            for c in 0..lay.c {
                let values =
                    || (0..lay.n).flat_map(move |i| (0..lay.l).map(move |l| lay.offset(i, c, l)));
                let (m, v) = if plan.batch_stats {
                    let m = values().map(|o| x[o]).sum::<f64>() / n;
                    let v = values().map(|o| (x[o] - m).powi(2)).sum::<f64>() / n;
                    if plan.track_step {
                        let f = semantics::momentum_factor(&self.cfg, nbt);
                        let unbiased = v * n / (n - 1.0);
                        // Buffers are f32, as in a float32 PyTorch module (a
                        // variance past f32's range becomes inf there too).
                        let rm = (1.0 - f) * self.running_mean[c] + f * m;
                        let rv = (1.0 - f) * self.running_var[c] + f * unbiased;
                        self.running_mean[c] = f64::from(rm as f32);
                        self.running_var[c] = f64::from(rv as f32);
                    }
                    (m, v)
                } else {
                    (self.running_mean[c], self.running_var[c])
                };
                let is = 1.0 / (v + eps).sqrt();
                let (w, b) = if self.cfg.affine {
                    (self.weight[c], self.bias[c])
                } else {
                    (1.0, 0.0)
                };
                for o in values() {
                    y[o] = (x[o] - m) * is * w + b;
                }
                mean[c] = m;
                invstd[c] = is;
            }
        }
        self.num_batches_tracked = nbt;
        self.saved = Some(Saved {
            x: x.to_vec(),
            shape: shape.to_vec(),
            layout: lay,
            mean,
            invstd,
            batch_stats: plan.batch_stats,
            empty: plan.empty,
        });
        Ok(y)
    }

    /// Gradients of the most recent successful forward for `grad_output`.
    pub fn backward(&self, grad_output: &[f32]) -> Result<CpuGradients> {
        let (dx, gw, gb) = self.backward_f64(&to_f64(grad_output))?;
        Ok(CpuGradients {
            grad_input: to_f32(&dx),
            grad_weight: gw.map(|g| to_f32(&g)),
            grad_bias: gb.map(|g| to_f32(&g)),
        })
    }

    /// Backward in f64: `(grad_input, grad_weight, grad_bias)`.
    #[allow(clippy::type_complexity)]
    pub fn backward_f64(
        &self,
        grad_output: &[f64],
    ) -> Result<(Vec<f64>, Option<Vec<f64>>, Option<Vec<f64>>)> {
        let s = self.saved.as_ref().ok_or(Error::NoForward)?;
        let lay = s.layout;
        if grad_output.len() != s.x.len() {
            return Err(Error::LengthMismatch {
                name: "grad_output",
                expected: s.x.len(),
                actual: grad_output.len(),
            });
        }
        let gc = if s.empty {
            self.cfg.num_features
        } else {
            lay.c
        };
        let (mut gw, mut gb) = (vec![0.0f64; gc], vec![0.0f64; gc]);
        let mut dx = vec![0.0f64; s.x.len()];
        if !s.empty {
            let n = lay.per_channel() as f64;
            for c in 0..lay.c {
                let values =
                    || (0..lay.n).flat_map(move |i| (0..lay.l).map(move |l| lay.offset(i, c, l)));
                let xhat = |o: usize| (s.x[o] - s.mean[c]) * s.invstd[c];
                let sum_dy: f64 = values().map(|o| grad_output[o]).sum();
                let sum_dy_xhat: f64 = values().map(|o| grad_output[o] * xhat(o)).sum();
                let w = if self.cfg.affine { self.weight[c] } else { 1.0 };
                let scale = w * s.invstd[c];
                for o in values() {
                    let g = grad_output[o];
                    dx[o] = if s.batch_stats {
                        scale * (g - sum_dy / n - xhat(o) * sum_dy_xhat / n)
                    } else {
                        scale * g
                    };
                }
                gw[c] = sum_dy_xhat;
                gb[c] = sum_dy;
            }
        }
        let affine = self.cfg.affine;
        Ok((dx, affine.then_some(gw), affine.then_some(gb)))
    }

    /// Shape of the last successful forward's input.
    pub fn last_shape(&self) -> Option<&[usize]> {
        self.saved.as_ref().map(|s| s.shape.as_slice())
    }
}
