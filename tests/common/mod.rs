//! Helpers shared by the integration tests.
#![allow(dead_code)]

use wgpu_batchnorm::{ContextOptions, GpuContext};

/// `ContextOptions::from_env()`, with `BN_THREAD_PARTIALS=0` or `=1`
/// forcing how reductions combine threads.
pub fn options() -> ContextOptions {
    let mut options = ContextOptions::from_env();
    if let Ok(v) = std::env::var("BN_THREAD_PARTIALS") {
        options.thread_partials = Some(v != "0");
    }
    options
}

/// The test context: `None` (tests skip) when no adapter exists, unless
/// `CI` is set, in which case a missing adapter fails the test.
/// `BN_THREAD_PARTIALS=0` or `=1` forces how reductions combine threads
/// (see `ContextOptions::thread_partials`), so one suite can run each way.
pub fn context() -> Option<GpuContext> {
    match GpuContext::with_options(options()) {
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

/// Runs forward and backward on the GPU module and the CPU reference with
/// the same random data (`offset + sd * noise`, weight ~ 1 ± 0.3), one step
/// per entry of `modes` (true = training), and checks outputs, gradients
/// and running statistics.
pub fn assert_matches_reference(
    ctx: &GpuContext,
    shape: &[usize],
    modes: &[bool],
    seed: u64,
    offset: f64,
    sd: f64,
) {
    use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNorm1dConfig, Tensor};
    let c = shape[1];
    let numel: usize = shape.iter().product();
    let mut rng = Rng(seed);
    let mut gpu = BatchNorm1d::new(ctx, BatchNorm1dConfig::new(c)).expect("gpu module");
    let mut reference = cpu::BatchNorm1d::new(BatchNorm1dConfig::new(c)).expect("cpu module");
    let w = rng.normals(c, 1.0, 0.3);
    gpu.set_weight(&w).expect("weight");
    reference.set_weight(&w).expect("weight");
    let f = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
    let at = |what: &str| format!("{shape:?} {what}");
    for &train in modes {
        if train {
            gpu.train();
            reference.train();
        } else {
            gpu.eval();
            reference.eval();
        }
        let x = rng.normals(numel, offset, sd);
        let dy = rng.normals(numel, 0.0, 1.0);
        let y = gpu
            .forward(&Tensor::from_slice(ctx, &x, shape).expect("x"))
            .expect("forward")
            .to_vec()
            .expect("read");
        let want = reference.forward(&x, shape).expect("cpu forward");
        check_close(&at("output"), &y, &f(&want), 2e-4).expect("output");
        let g = gpu
            .backward(&Tensor::from_slice(ctx, &dy, shape).expect("dy"))
            .expect("backward");
        let cg = reference.backward(&dy).expect("cpu backward");
        let gi = g.grad_input.to_vec().expect("read");
        check_close(&at("grad_input"), &gi, &f(&cg.grad_input), 1e-3).expect("grad_input");
        let gw = g.grad_weight.expect("affine").to_vec().expect("read");
        check_close(
            &at("grad_weight"),
            &gw,
            &f(&cg.grad_weight.expect("affine")),
            1e-3,
        )
        .expect("grad_weight");
        for (name, got, want) in [
            ("running_mean", gpu.running_mean(), reference.running_mean()),
            ("running_var", gpu.running_var(), reference.running_var()),
        ] {
            let got = got.expect("read").expect("tracked");
            check_close(&at(name), &got, &f(&want.expect("tracked")), 1e-5).expect(name);
        }
    }
}
