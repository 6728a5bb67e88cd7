//! Helpers shared by the integration tests.
#![allow(dead_code)]

use wgpu_batchnorm::GpuContext;

/// The test context: `None` (tests skip) when no adapter exists, unless
/// `CI` is set, in which case a missing adapter fails the test.
pub fn context() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            if std::env::var("CI").is_ok() {
                panic!("CI is set but no GPU adapter is available: {e}");
            }
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

/// PyTorch-conformance comparison: `max|got - want| / max(1, max|want|) <= tol`,
/// NaN must match NaN and infinities must match exactly.
pub fn check_close(what: &str, got: &[f32], want: &[f64], tol: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: length {} != {}", got.len(), want.len()));
    }
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(1.0f64, |a, v| a.max(v.abs()));
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        if w.is_nan() || g.is_nan() {
            if w.is_nan() != g.is_nan() {
                return Err(format!("{what}[{i}]: got {g}, want {w} (NaN mismatch)"));
            }
            continue;
        }
        if w.is_infinite() || g.is_infinite() {
            if g != w {
                return Err(format!("{what}[{i}]: got {g}, want {w}"));
            }
            continue;
        }
        worst = worst.max((g - w).abs() / scale);
    }
    if worst > tol {
        return Err(format!("{what}: relative error {worst:e} > tol {tol:e}"));
    }
    Ok(())
}

/// Deterministic xorshift generator for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Approximately standard normal.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn normals(&mut self, n: usize, mean: f64, sd: f64) -> Vec<f32> {
        (0..n).map(|_| (mean + sd * self.normal()) as f32).collect()
    }
}
