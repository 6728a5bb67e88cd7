//! GPU module against the CPU reference on random shapes, configs, data and
//! train/eval sequences (proptest), covering both reduction layouts and
//! the spread reductions (many channels, long planes), and tensors in
//! chunks (tiny storage bindings, `random/chunked.rs`).

#[path = "random/chunked.rs"]
mod chunked;
mod common;
#[path = "random/nd.rs"]
mod nd;

use proptest::prelude::*;
use std::sync::OnceLock;
use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNorm1dConfig, GpuContext, Tensor};

fn ctx() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(common::context).as_ref()
}

#[derive(Debug, Clone)]
struct Case {
    shape: Vec<usize>,
    cfg: BatchNorm1dConfig,
    steps: Vec<bool>,
    seed: u64,
    offset: f64,
    sd: f64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            (0usize..48, 1usize..70).prop_map(|(n, c)| vec![n, c]),
            (0usize..12, 1usize..20, 0usize..40).prop_map(|(n, c, l)| vec![n, c, l]),
            // Many channels, and long planes: the spread reductions on CPU
            // adapters (plan_spread).
            (
                1usize..4,
                120usize..260,
                prop_oneof![Just(4usize), Just(8), Just(13), Just(16), Just(22)]
            )
                .prop_map(|(n, c, l)| vec![n, c, l]),
            (1usize..3, 1usize..10, 1020usize..1100).prop_map(|(n, c, l)| vec![n, c, l]),
        ],
        (
            prop_oneof![Just(1e-5), Just(1e-3), Just(0.5)],
            prop_oneof![
                Just(Some(0.1)),
                Just(None),
                Just(Some(0.0)),
                Just(Some(1.0))
            ],
            any::<bool>(),
            any::<bool>(),
        ),
        proptest::collection::vec(any::<bool>(), 1..4),
        any::<u64>(),
        -100.0f64..100.0,
        prop_oneof![Just(0.01), Just(1.0), Just(30.0)],
    )
        .prop_map(
            |(shape, (eps, momentum, affine, track), steps, seed, offset, sd)| {
                let c = shape[1];
                Case {
                    shape,
                    cfg: BatchNorm1dConfig::new(c)
                        .eps(eps)
                        .momentum(momentum)
                        .affine(affine)
                        .track_running_stats(track),
                    steps,
                    seed,
                    offset,
                    sd,
                }
            },
        )
}

fn run(ctx: &GpuContext, case: &Case) -> Result<(), String> {
    let mut rng = common::Rng(case.seed | 1);
    let mut gpu = BatchNorm1d::new(ctx, case.cfg.clone()).map_err(|e| e.to_string())?;
    let mut cpu = cpu::BatchNorm1d::new(case.cfg.clone()).map_err(|e| e.to_string())?;
    let nf = case.cfg.num_features;
    if case.cfg.affine {
        let w = rng.normals(nf, 1.0, 0.5);
        let b = rng.normals(nf, 0.0, 0.5);
        gpu.set_weight(&w).map_err(|e| e.to_string())?;
        gpu.set_bias(&b).map_err(|e| e.to_string())?;
        cpu.set_weight(&w).map_err(|e| e.to_string())?;
        cpu.set_bias(&b).map_err(|e| e.to_string())?;
    }
    let numel: usize = case.shape.iter().product();
    // Both sides keep running statistics in f32 buffers; in eval the
    // running mean's rounding (up to ~eps_f32 * |offset|) is divided by the
    // standard deviation, so data far from zero with a tiny spread carries
    // that much more error in any f32 implementation, PyTorch's included.
    // Training normalizes with batch statistics, which each channel's
    // shift keeps exact to f32 rounding whatever the offset.
    let f32_bound = 2.0 * f64::from(f32::EPSILON) * case.offset.abs() / case.sd;
    for (i, &train) in case.steps.iter().enumerate() {
        let bound = if train { 0.0 } else { f32_bound };
        let (tol_out, tol_grad) = (2e-4 + bound, 1e-3 + bound);
        if train {
            gpu.train();
            cpu.train();
        } else {
            gpu.eval();
            cpu.eval();
        }
        let x = rng.normals(numel, case.offset, case.sd);
        let dy = rng.normals(numel, 0.0, 1.0);
        let tx = Tensor::from_slice(ctx, &x, &case.shape).map_err(|e| e.to_string())?;
        let g = gpu.forward(&tx);
        let c = cpu.forward(&x, &case.shape);
        let at = |w: &str| format!("step {i} {w}");
        match (g, c) {
            (Err(a), Err(b)) => {
                if a.to_string() != b.to_string() {
                    return Err(at(&format!("errors differ: {a} vs {b}")));
                }
            }
            (Ok(y), Ok(want)) => {
                let got = y.to_vec().map_err(|e| e.to_string())?;
                let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
                common::check_close(&at("output"), &got, &want, tol_out)?;
                let tdy = Tensor::from_slice(ctx, &dy, &case.shape).map_err(|e| e.to_string())?;
                let gg = gpu.backward(&tdy).map_err(|e| e.to_string())?;
                let cg = cpu.backward(&dy).map_err(|e| e.to_string())?;
                let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
                let gi = gg.grad_input.to_vec().map_err(|e| e.to_string())?;
                common::check_close(&at("grad_input"), &gi, &f(&cg.grad_input), tol_grad)?;
                for (name, a, b) in [
                    ("grad_weight", gg.grad_weight, cg.grad_weight),
                    ("grad_bias", gg.grad_bias, cg.grad_bias),
                ] {
                    match (a, b) {
                        (Some(a), Some(b)) => {
                            let a = a.to_vec().map_err(|e| e.to_string())?;
                            common::check_close(&at(name), &a, &f(&b), tol_grad)?;
                        }
                        (None, None) => {}
                        _ => return Err(at(&format!("{name} presence differs"))),
                    }
                }
            }
            (a, b) => return Err(at(&format!("gpu {:?} vs cpu {:?}", a.err(), b.err()))),
        }
        if gpu.num_batches_tracked() != cpu.num_batches_tracked() {
            return Err(at("num_batches_tracked differs"));
        }
        let f =
            |v: Option<Vec<f32>>| v.map(|v| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
        let rm = gpu.running_mean().map_err(|e| e.to_string())?;
        let rv = gpu.running_var().map_err(|e| e.to_string())?;
        match (rm, f(cpu.running_mean()), rv, f(cpu.running_var())) {
            (Some(a), Some(b), Some(c), Some(d)) => {
                common::check_close(&at("running_mean"), &a, &b, 1e-4)?;
                common::check_close(&at("running_var"), &c, &d, 1e-4)?;
            }
            (None, None, None, None) => {}
            _ => return Err(at("running stats presence differs")),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gpu_matches_cpu_reference(case in case()) {
        let Some(ctx) = ctx() else { return Ok(()) };
        if let Err(e) = run(ctx, &case) {
            prop_assert!(false, "{e}\ncase: {case:?}");
        }
    }
}

/// Shapes that exercise many segments and both layouts with larger sizes.
#[test]
fn larger_shapes_match_reference() {
    let Some(ctx) = ctx() else { return };
    for (i, shape) in [
        vec![4096, 3],
        vec![1000, 257],
        vec![3, 4097],
        vec![64, 3, 1000],
        vec![513, 7, 9],
        vec![2, 100_000],
        // Millions of channels in two rows: the partials buffer (the
        // rescue's room, two vec4s a channel) within a 128 MiB binding.
        vec![2, 2_097_152],
        vec![2, 2_097_151],
    ]
    .into_iter()
    .enumerate()
    {
        let c = shape[1];
        let case = Case {
            shape,
            cfg: BatchNorm1dConfig::new(c),
            steps: vec![true, false],
            seed: 1000 + i as u64,
            offset: 3.0,
            sd: 2.0,
        };
        run(ctx, &case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
    }
}

/// Values of every kind: large offsets, magnitudes up to 1e33 (whose
/// squares overflow f32), subnormals, ±inf, NaN.
fn special_values(kind: u8, n: usize, rng: &mut common::Rng) -> Vec<f32> {
    (0..n)
        .map(|i| match kind {
            0 => (1e6 + rng.normal()) as f32,
            1 => (1e15 * rng.normal()) as f32,
            2 => (rng.normal() * 1e-40) as f32, // subnormal
            3 if i % 7 == 3 => f32::INFINITY,
            4 if i % 5 == 1 => f32::NEG_INFINITY,
            5 if i % 11 == 2 => f32::NAN,
            6 => (1e30 * rng.normal()) as f32,
            7 => (-3e33 + 1e32 * rng.normal()) as f32,
            _ => rng.normal() as f32,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random train/eval sequences over extreme values: the GPU agrees with
    /// the CPU reference (NaN where it has NaN) or both return the same error.
    #[test]
    fn extreme_values_match_reference(
        shape in prop_oneof![
            (0usize..20, 1usize..9).prop_map(|(n, c)| vec![n, c]),
            (0usize..6, 1usize..5, 0usize..9).prop_map(|(n, c, l)| vec![n, c, l]),
        ],
        kinds in proptest::collection::vec(0u8..9, 1..4),
        seed in any::<u64>(),
    ) {
        let Some(ctx) = ctx() else { return Ok(()) };
        let c = shape[1];
        let numel: usize = shape.iter().product();
        let mut rng = common::Rng(seed | 1);
        let cfg = BatchNorm1dConfig::new(c);
        let mut gpu = BatchNorm1d::new(ctx, cfg.clone()).expect("bn");
        let mut cpu = cpu::BatchNorm1d::new(cfg).expect("cpu");
        // The data's scale as the running mean sees it (the largest finite
        // magnitude of each training batch, averaged with the momentum): a
        // running mean is exact to f32 rounding of the data, so where a
        // channel's mean cancels (values of 1e15 averaging 1e11), it is
        // compared at that scale.
        let mut data_scale = 0f64;
        for (i, kind) in kinds.iter().enumerate() {
            if i % 2 == 1 {
                gpu.eval();
                cpu.eval();
            } else {
                gpu.train();
                cpu.train();
            }
            let x = special_values(*kind, numel, &mut rng);
            if i % 2 == 0 {
                let batch = x
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold(0f64, |m, v| m.max(f64::from(v.abs())));
                data_scale = 0.9 * data_scale + 0.1 * batch;
            }
            let g = gpu.forward(&Tensor::from_slice(ctx, &x, &shape).expect("x"));
            let w = cpu.forward(&x, &shape);
            match (g, w) {
                (Ok(y), Ok(want)) => {
                    let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
                    let got = y.to_vec().expect("read");
                    if let Err(e) = common::check_close("output", &got, &want, 1e-3) {
                        prop_assert!(false, "kind {kind} step {i}: {e}");
                    }
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "gpu {:?} vs cpu {:?}", a.err(), b.err()),
            }
            prop_assert_eq!(gpu.num_batches_tracked(), cpu.num_batches_tracked());
            let rm = gpu.running_mean().expect("rm").expect("some");
            let want: Vec<f64> = cpu.running_mean().expect("rm").iter().map(|&v| f64::from(v)).collect();
            let want_max = want.iter().filter(|v| v.is_finite()).fold(1f64, |m, v| m.max(v.abs()));
            let tol = 1e-4f64.max(1e-6 * data_scale / want_max);
            if let Err(e) = common::check_close("running_mean", &rm, &want, tol) {
                prop_assert!(false, "kind {kind} step {i}: {e}");
            }
        }
    }
}
