//! The cases' inputs (extreme values of each `Kind`) and the checks of
//! their per-channel sums against the reference.

use super::common::Rng;
use wgpu_batchnorm::BatchNormConfig;

/// How a case's values are made extreme (even channels only; odd channels
/// stay ordinary, and must stay exact beside them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Eval: x = f32::MAX against a running mean of -3e38 (x - mean past
    /// f32's range, x_hat 6.4e36 within it).
    FarFromRunningMean,
    /// Eval: eps 1e-30 and running variance 0 (invstd 1e15) with x about
    /// 1e30 and dy about 1e-20: x_hat past f32's range, dy * x_hat not.
    TinyVariance,
    /// dy about 2e37: sums past f32's range, means within it.
    HugeDy,
    /// dy = +-3e38 by row parity: grad_bias cancels exactly in f64.
    CancellingDy,
    /// HugeDy plus one +inf in dy: the sums are +-inf (or NaN) as in f64.
    InfiniteDy,
}

/// A case's tensors, running statistics and config.
pub struct Inputs {
    pub x: Vec<f32>,
    pub dy: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub cfg: BatchNormConfig,
}

/// The values of `kind` over `shape` (even channels extreme).
pub fn inputs(shape: &[usize], kind: Kind) -> Inputs {
    let numel: usize = shape.iter().product();
    let (c, l) = (shape[1], shape[2..].iter().product::<usize>());
    let mut rng = Rng(numel as u64 * 31 + kind as u64);
    let mut x = rng.normals(numel, 0.0, 1.0);
    let mut dy = rng.normals(numel, 0.0, 1.0);
    let (mut mean, mut var) = (vec![0.3f32; c], vec![2.0f32; c]);
    let mut cfg = BatchNormConfig::new(c);
    for i in 0..numel {
        let (row, ch) = (i / (l * c), (i / l) % c);
        if ch % 2 == 1 {
            continue;
        }
        match kind {
            Kind::FarFromRunningMean => {
                x[i] = f32::MAX;
                (mean[ch], var[ch]) = (-3e38, 1e4);
            }
            Kind::TinyVariance => {
                (x[i], dy[i]) = (x[i] * 1e30, dy[i] * 1e-20);
                var[ch] = 0.0;
            }
            Kind::HugeDy => dy[i] *= 2e37,
            Kind::CancellingDy => dy[i] = if row % 2 == 0 { 3e38 } else { -3e38 },
            Kind::InfiniteDy => {
                dy[i] = if row == 1 {
                    f32::INFINITY
                } else {
                    dy[i] * 2e37
                }
            }
        }
    }
    if kind == Kind::TinyVariance {
        cfg.eps = 1e-30;
    }
    Inputs {
        x,
        dy,
        mean,
        var,
        cfg,
    }
}

/// Per channel, the f64 sums of |dy| and of |dy * x_hat| (x_hat from the
/// batch statistics in training, the running ones in eval): the scale of
/// the f32 rounding of the terms, all that a sum which cancels keeps of
/// them (few rows of many channels: a channel's dy of 2 or 3 rows may
/// nearly cancel).
pub fn term_scales(inp: &Inputs, shape: &[usize], train: bool) -> (Vec<f64>, Vec<f64>) {
    let (c, l) = (shape[1], shape[2..].iter().product::<usize>());
    let mut xs = vec![Vec::new(); c];
    let mut dys = vec![Vec::new(); c];
    for (i, (&x, &g)) in inp.x.iter().zip(&inp.dy).enumerate() {
        xs[(i / l) % c].push(f64::from(x));
        dys[(i / l) % c].push(f64::from(g));
    }
    let (mut dy_scale, mut dyx_scale) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let n = xs[ch].len() as f64;
        let (mean, var) = if train {
            let mean = xs[ch].iter().sum::<f64>() / n;
            let var = xs[ch].iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            (mean, var)
        } else {
            (f64::from(inp.mean[ch]), f64::from(inp.var[ch]))
        };
        let invstd = 1.0 / (var + inp.cfg.eps).sqrt();
        for (&x, &g) in xs[ch].iter().zip(&dys[ch]) {
            dy_scale[ch] += g.abs();
            dyx_scale[ch] += (g * (x - mean) * invstd).abs();
        }
    }
    (dy_scale, dyx_scale)
}

/// Per-channel sums against the reference: NaN and infinities exactly,
/// finite values within 1e-3 of the reference's plus 1e-6 of the sum of
/// the terms' magnitudes (the f32 rounding of each term is 2^-24 of it;
/// where the terms cancel, that rounding is what is left).
pub fn check_sums(what: &str, got: &[f32], want: &[f32], scale: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (ch, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let (g, w) = (f64::from(g), f64::from(w));
        let at = format!("{what} channel {ch}: got {g}, want {w}");
        if g.is_nan() || w.is_nan() || g.is_infinite() || w.is_infinite() {
            assert!(g == w || (g.is_nan() && w.is_nan()), "{at}");
            continue;
        }
        assert!(
            (g - w).abs() <= 1e-3 * w.abs() + 1e-6 * s,
            "{at} (terms {s:e})"
        );
    }
}
