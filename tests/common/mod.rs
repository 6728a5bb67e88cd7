//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;

use wgpu_batchnorm::{
    cpu, BatchNorm, BatchNorm2d, BatchNormConfig, ContextOptions, Epilogue, GpuContext,
    MemoryFormat, SpatialRank, Tensor,
};

/// `ContextOptions::from_env()`, with `BN_THREAD_PARTIALS=0` or `=1`
/// forcing how reductions combine threads, and `BN_COLUMNS=0` or `=1`
/// whether `(N, C)` inputs with few rows take the column kernels.
pub fn options() -> ContextOptions {
    let mut options = ContextOptions::from_env().expect("valid WGPU_* variables");
    if let Ok(v) = std::env::var("BN_THREAD_PARTIALS") {
        options.tuning.thread_partials = Some(v != "0");
    }
    if let Ok(v) = std::env::var("BN_COLUMNS") {
        options.tuning.columns = Some(v != "0");
    }
    options
}

/// Whether tests run under CI (`CI` set), where nothing may be skipped
/// silently.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Records that the running test skipped (part of) its work: printed, and
/// appended to `target/tmp/skipped-tests.log`, which `.ci/run` lists with a
/// count after each leg.
pub fn skip(what: &str, reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or(what);
    let line = format!("SKIPPED {test} ({what}): {reason}\n");
    eprint!("{line}");
    let path = concat!(env!("CARGO_TARGET_TMPDIR"), "/skipped-tests.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: appends from parallel tests stay whole.
        let _ = f.write_all(line.as_bytes());
    }
}

/// The test context: `None` (the test is recorded as skipped) when no
/// adapter exists, unless under CI, where a missing adapter fails the
/// test. `BN_THREAD_PARTIALS=0` or `=1` forces how reductions combine
/// threads, so one suite can run each way.
#[track_caller]
pub fn context() -> Option<GpuContext> {
    match GpuContext::with_options(options()) {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            if in_ci() {
                panic!("CI is set but no GPU adapter is available: {e}");
            }
            let at = std::panic::Location::caller();
            skip(
                &format!("{}:{}", at.file(), at.line()),
                &format!("no GPU adapter ({e})"),
            );
            None
        }
    }
}

/// The test context with the column kernels forced on (`Some(true)`), off,
/// or chosen per adapter (`None`); `None` where there is no adapter.
#[track_caller]
pub fn context_with(columns: Option<bool>) -> Option<GpuContext> {
    context_tuned(options().tuning.thread_partials, columns)
}

/// The test context with per-thread partials and the column kernels each
/// forced (`Some`) or chosen per adapter (`None`); `None` where there is
/// no adapter.
#[track_caller]
pub fn context_tuned(thread_partials: Option<bool>, columns: Option<bool>) -> Option<GpuContext> {
    context()?;
    let mut options = options();
    options.tuning.thread_partials = thread_partials;
    options.tuning.columns = columns;
    Some(GpuContext::with_options(options).expect("context"))
}

/// Whether the context runs f16 kernels; records a skip when not (the
/// adapter lacks SHADER_F16, e.g. wgpu's GL backend).
#[track_caller]
pub fn f16_or_skip(ctx: &GpuContext) -> bool {
    let ok = ctx
        .device()
        .features()
        .contains(wgpu_batchnorm::wgpu::Features::SHADER_F16);
    if !ok {
        let at = std::panic::Location::caller();
        let name = ctx
            .adapter_info()
            .map_or("?".into(), |i| format!("{} ({:?})", i.name, i.backend));
        skip(
            &format!("{}:{}", at.file(), at.line()),
            &format!("adapter {name} lacks SHADER_F16"),
        );
    }
    ok
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

/// Channel by channel (so that one channel's error is not hidden by
/// another's larger values; `(N, C)` tensors and per-channel vectors, `c`
/// channels): `got` within `tol` of `want` relative to the channel's
/// largest finite value (at least 1), NaN exactly where `want` has NaN.
pub fn check_per_channel(what: &str, got: &[f32], want: &[f32], c: usize, tol: f64) {
    check_channels(what, got, want, (c, 1), tol);
}

/// [`check_per_channel`] for `(N, C, L)` tensors: runs of `l` values per
/// channel.
pub fn check_channels(what: &str, got: &[f32], want: &[f32], (c, l): (usize, usize), tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (mut gots, mut wants) = (vec![Vec::new(); c], vec![Vec::new(); c]);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        gots[(i / l) % c].push(g);
        wants[(i / l) % c].push(f64::from(w));
    }
    for ch in 0..c {
        let at = format!("{what} channel {ch}");
        check_close(&at, &gots[ch], &wants[ch], tol).expect("channel");
    }
}

/// A command encoder for recorded work (`encode_forward`, ...).
pub fn encoder(ctx: &GpuContext) -> wgpu_batchnorm::wgpu::CommandEncoder {
    ctx.device()
        .create_command_encoder(&wgpu_batchnorm::wgpu::CommandEncoderDescriptor {
            label: Some("test/recorded"),
        })
}

/// f32 values as f64.
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
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

/// Runs forward and backward on the GPU module of rank `R` and the CPU
/// reference with the same random data (`offset + sd * noise`, weight
/// ~ 1 ± 0.3), one step per entry of `modes` (true = training), in
/// `format`, and checks outputs, gradients and running statistics.
pub fn assert_matches_reference_in<R: SpatialRank>(
    ctx: &GpuContext,
    shape: &[usize],
    format: MemoryFormat,
    modes: &[bool],
    seed: u64,
    offset: f64,
    sd: f64,
) {
    let c = shape[1];
    let numel: usize = shape.iter().product();
    let mut rng = Rng(seed);
    let mut gpu = BatchNorm::<R>::new(ctx, BatchNormConfig::new(c)).expect("gpu module");
    let mut reference = cpu::BatchNorm::<R>::new(BatchNormConfig::new(c)).expect("cpu module");
    let w = rng.normals(c, 1.0, 0.3);
    gpu.set_weight(&w).expect("weight");
    reference.set_weight(&w).expect("weight");
    let at = |what: &str| format!("{shape:?} {format:?} {what}");
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
        check_step(
            ctx,
            (&mut gpu, &mut reference),
            (&x, &dy),
            (shape, format),
            &at,
            (1e-3, 1e-3),
        );
    }
}

/// One forward and one backward of `gpu` and its `reference` on the same
/// `x` and `dy` (in `format`): the output within 2e-4, grad_input within
/// `tol.0`, grad_weight and grad_bias within `tol.1`, and the running
/// statistics within 1e-5 of the reference's (relative to the largest
/// finite value; NaN only where the reference has NaN). Returns the GPU's
/// grad_input.
pub fn check_step<R: SpatialRank>(
    ctx: &GpuContext,
    (gpu, reference): (&mut BatchNorm<R>, &mut cpu::BatchNorm<R>),
    (x, dy): (&[f32], &[f32]),
    (shape, format): (&[usize], MemoryFormat),
    at: &dyn Fn(&str) -> String,
    (dx_tol, param_tol): (f64, f64),
) -> Vec<f32> {
    let tx = Tensor::from_slice_with_format(ctx, x, shape, format).expect("x");
    let y = gpu.forward(&tx).expect("forward").to_vec().expect("read");
    let want = reference
        .forward_with_format(x, shape, format)
        .expect("cpu forward");
    check_close(&at("output"), &y, &f64s(&want), 2e-4).expect("output");
    let tdy = Tensor::from_slice_with_format(ctx, dy, shape, format).expect("dy");
    let g = gpu.backward(&tdy).expect("backward");
    let cg = reference.backward(dy).expect("cpu backward");
    let gi = g.grad_input.to_vec().expect("read");
    check_close(&at("grad_input"), &gi, &f64s(&cg.grad_input), dx_tol).expect("grad_input");
    for (name, got, want) in [
        ("grad_weight", g.grad_weight, cg.grad_weight),
        ("grad_bias", g.grad_bias, cg.grad_bias),
    ] {
        let got = got.expect("affine").to_vec().expect("read");
        check_close(&at(name), &got, &f64s(&want.expect("affine")), param_tol).expect(name);
    }
    for (name, got, want) in [
        ("running_mean", gpu.running_mean(), reference.running_mean()),
        ("running_var", gpu.running_var(), reference.running_var()),
    ] {
        let got = got.expect("read").expect("tracked");
        check_close(&at(name), &got, &f64s(&want.expect("tracked")), 1e-5).expect(name);
    }
    gi
}

/// [`assert_matches_reference_in`] for a channels-first `BatchNorm1d` input.
pub fn assert_matches_reference(
    ctx: &GpuContext,
    shape: &[usize],
    modes: &[bool],
    seed: u64,
    offset: f64,
    sd: f64,
) {
    assert_matches_reference_in::<wgpu_batchnorm::Rank1d>(
        ctx,
        shape,
        MemoryFormat::ChannelsFirst,
        modes,
        seed,
        offset,
        sd,
    );
}

/// Channels-first `(N, C, *spatial)` data in channels-last order, and back.
pub fn to_channels_last(data: &[f32], shape: &[usize]) -> Vec<f32> {
    reorder(data, shape, true)
}

pub fn from_channels_last(data: &[f32], shape: &[usize]) -> Vec<f32> {
    reorder(data, shape, false)
}

/// Moves each value between its channels-first and channels-last index.
fn reorder(data: &[f32], shape: &[usize], to_last: bool) -> Vec<f32> {
    let (n, c, s) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
    let mut out = vec![0.0; data.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..s {
                let (first, last) = ((i * c + ch) * s + p, (i * s + p) * c + ch);
                if to_last {
                    out[last] = data[first];
                } else {
                    out[first] = data[last];
                }
            }
        }
    }
    out
}

/// A fused training forward (residual add + ReLU) of a `BatchNorm2d`
/// over `shape` equals batch norm, add and ReLU on the host, and its
/// backward the parts' (grad_residual the masked dy exactly); in eval the
/// ReLU alone equals batch norm then ReLU exactly.
pub fn fused_equals_parts(ctx: &GpuContext, shape: [usize; 4], seed: u64) {
    let numel: usize = shape.iter().product();
    let mut rng = Rng(seed);
    let (x, r, dy) = (
        rng.normals(numel, 0.0, 2.0),
        rng.normals(numel, 0.0, 1.0),
        rng.normals(numel, 0.0, 1.0),
    );
    let t = |v: &[f32]| Tensor::from_slice(ctx, v, &shape).expect("t");
    let (tx, tr) = (t(&x), t(&r));
    let mut fused = BatchNorm2d::new(ctx, BatchNormConfig::new(shape[1])).expect("bn");
    let y = read_tensor(
        &fused
            .forward_fused(&tx, Epilogue::relu().with_residual(&tr))
            .expect("fwd"),
    );
    let g = fused.backward(&t(&dy)).expect("backward");
    // The parts: plain batch norm, then add and ReLU on the host.
    let mut plain = BatchNorm2d::new(ctx, BatchNormConfig::new(shape[1])).expect("bn");
    let bn = read_tensor(&plain.forward(&tx).expect("fwd"));
    let pre: Vec<f32> = bn.iter().zip(&r).map(|(a, b)| a + b).collect();
    let want: Vec<f64> = pre.iter().map(|&v| f64::from(v.max(0.0))).collect();
    check_close("fused output", &y, &want, 1e-6).expect("output");
    let masked: Vec<f32> = dy
        .iter()
        .zip(&pre)
        .map(|(&g, &p)| if p > 0.0 { g } else { 0.0 })
        .collect();
    let gp = plain.backward(&t(&masked)).expect("backward");
    let gr = read_tensor(g.grad_residual.as_ref().expect("residual"));
    check_close("grad_residual", &gr, &f64s(&masked), 0.0).expect("mask");
    check_close(
        "grad_input",
        &read_tensor(&g.grad_input),
        &f64s(&read_tensor(&gp.grad_input)),
        1e-5,
    )
    .expect("grad_input");
    // The ReLU alone, in eval, with the running statistics.
    fused.eval();
    plain.eval();
    let y = read_tensor(&fused.forward_fused(&tx, Epilogue::relu()).expect("fwd"));
    let bn = read_tensor(&plain.forward(&tx).expect("fwd"));
    let want: Vec<f64> = bn.iter().map(|&v| f64::from(v.max(0.0))).collect();
    check_close("eval relu", &y, &want, 0.0).expect("eval relu");
    assert!(fused
        .backward(&t(&dy))
        .expect("backward")
        .grad_residual
        .is_none());
}

fn read_tensor(t: &Tensor) -> Vec<f32> {
    t.to_vec().expect("read")
}
