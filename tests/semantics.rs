//! PyTorch semantics beyond the recorded cases: numerical stability, NaN and
//! infinities, empty batches, momentum = None, eval without running stats,
//! determinism.

mod common;

use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNorm1dConfig, Tensor};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[test]
fn large_offsets_normalize_correctly() {
    let Some(ctx) = common::context() else { return };
    for (offset, sd, tol) in [(1e4, 0.1, 1e-4), (1e6, 1.0, 1e-4), (-3e5, 0.5, 1e-4)] {
        for shape in [vec![4096, 4], vec![256, 4, 16]] {
            let numel: usize = shape.iter().product();
            let x = common::Rng(5).normals(numel, offset, sd);
            let mut gpu = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(4)).expect("bn");
            let mut cpu = cpu::BatchNorm1d::new(BatchNorm1dConfig::new(4)).expect("cpu");
            let y = gpu
                .forward(&Tensor::from_slice(&ctx, &x, &shape).expect("x"))
                .expect("forward")
                .to_vec()
                .expect("read");
            let want = cpu.forward(&x, &shape).expect("cpu");
            common::check_close("offset output", &y, &f64s(&want), tol)
                .unwrap_or_else(|e| panic!("offset {offset} {shape:?}: {e}"));
            let rv = gpu.running_var().expect("rv").expect("some");
            common::check_close(
                "offset running_var",
                &rv,
                &f64s(&cpu.running_var().expect("rv")),
                1e-4,
            )
            .unwrap_or_else(|e| panic!("offset {offset}: {e}"));
        }
    }
}

#[test]
fn nan_and_inf_poison_only_their_channel() {
    let Some(ctx) = common::context() else { return };
    let (n, c) = (16, 4);
    let mut x = common::Rng(9).normals(n * c, 0.0, 1.0);
    x[5 * c + 1] = f32::NAN; // channel 1
    x[7 * c + 2] = f32::INFINITY; // channel 2
    x[3] = f32::INFINITY; // channel 3: its first value (the shift) is infinite
    let mut gpu = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c)).expect("bn");
    let mut cpu = cpu::BatchNorm1d::new(BatchNorm1dConfig::new(c)).expect("cpu");
    let y = gpu
        .forward(&Tensor::from_slice(&ctx, &x, &[n, c]).expect("x"))
        .expect("forward")
        .to_vec()
        .expect("read");
    let want = cpu.forward(&x, &[n, c]).expect("cpu");
    for i in 0..n {
        assert!(y[i * c].is_finite(), "channel 0 must stay finite");
        for ch in 1..c {
            assert!(y[i * c + ch].is_nan(), "channel {ch} must be NaN");
        }
    }
    common::check_close("output", &y, &f64s(&want), 1e-4).expect("matches reference");
    let rm = gpu.running_mean().expect("rm").expect("some");
    let want_rm = cpu.running_mean().expect("rm");
    assert!(rm[1].is_nan() && want_rm[1].is_nan());
    assert_eq!(
        rm[2],
        f32::INFINITY,
        "PyTorch's mean of data with +inf is +inf"
    );
    assert_eq!(want_rm[2], f32::INFINITY);
    assert_eq!(rm[3], f32::INFINITY);
    let rv = gpu.running_var().expect("rv").expect("some");
    assert!(rv[1].is_nan() && rv[2].is_nan() && rv[3].is_nan() && rv[0].is_finite());
}

#[test]
fn empty_batches_behave_like_pytorch() {
    let Some(ctx) = common::context() else { return };
    for shape in [vec![0, 3], vec![4, 3, 0], vec![0, 3, 5], vec![0, 7]] {
        let mut gpu = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3)).expect("bn");
        let mut cpu = cpu::BatchNorm1d::new(BatchNorm1dConfig::new(3)).expect("cpu");
        let x = Tensor::zeros(&ctx, &shape).expect("x");
        let y = gpu.forward(&x).expect("empty forward");
        assert_eq!(y.shape(), &shape[..]);
        assert!(y.to_vec().expect("read").is_empty());
        cpu.forward(&[], &shape).expect("cpu empty forward");
        // Counted as a batch, statistics untouched.
        assert_eq!(gpu.num_batches_tracked(), 1);
        assert_eq!(cpu.num_batches_tracked(), 1);
        assert_eq!(gpu.running_mean().expect("rm"), Some(vec![0.0; 3]));
        assert_eq!(gpu.running_var().expect("rv"), Some(vec![1.0; 3]));
        let g = gpu
            .backward(&Tensor::zeros(&ctx, &shape).expect("dy"))
            .expect("backward");
        assert!(g.grad_input.to_vec().expect("read").is_empty());
        assert_eq!(
            g.grad_weight.expect("gw").to_vec().expect("read"),
            vec![0.0; 3]
        );
        gpu.eval();
        gpu.forward(&x).expect("eval empty");
        assert_eq!(gpu.num_batches_tracked(), 1);
    }
}

#[test]
fn cumulative_average_with_momentum_none() {
    let Some(ctx) = common::context() else { return };
    let cfg = BatchNorm1dConfig::new(2).momentum(None);
    let mut bn = BatchNorm1d::new(&ctx, cfg).expect("bn");
    let mut means = Vec::new();
    for step in 0..4 {
        let x: Vec<f32> = (0..20)
            .map(|i| (i % 2) as f32 * 3.0 + step as f32 + (i / 2) as f32 * 0.01)
            .collect();
        let batch_mean: f32 = x.iter().step_by(2).sum::<f32>() / 10.0;
        means.push(batch_mean);
        bn.forward(&Tensor::from_slice(&ctx, &x, &[10, 2]).expect("x"))
            .expect("forward");
    }
    let want: f32 = means.iter().sum::<f32>() / 4.0;
    let rm = bn.running_mean().expect("rm").expect("some");
    approx::assert_abs_diff_eq!(rm[0], want, epsilon = 1e-5);
    assert_eq!(bn.num_batches_tracked(), 4);
}

#[test]
fn eval_without_running_stats_uses_batch_statistics() {
    let Some(ctx) = common::context() else { return };
    let cfg = BatchNorm1dConfig::new(3).track_running_stats(false);
    let mut bn = BatchNorm1d::new(&ctx, cfg).expect("bn");
    let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
    let t = Tensor::from_slice(&ctx, &x, &[3, 3]).expect("x");
    let train = bn.forward(&t).expect("train").to_vec().expect("read");
    bn.eval();
    let eval = bn.forward(&t).expect("eval").to_vec().expect("read");
    assert_eq!(train, eval);
    assert_eq!(bn.num_batches_tracked(), 0);
    assert_eq!(bn.running_mean().expect("rm"), None);
}

#[test]
fn reset_restores_pytorch_initial_values() {
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(2)).expect("bn");
    bn.set_weight(&[2.0, 3.0]).expect("w");
    bn.forward(&Tensor::from_slice(&ctx, &[1.0, 2.0, 5.0, 7.0], &[2, 2]).expect("x"))
        .expect("forward");
    bn.reset_running_stats().expect("reset");
    assert_eq!(bn.running_mean().expect("rm"), Some(vec![0.0, 0.0]));
    assert_eq!(bn.running_var().expect("rv"), Some(vec![1.0, 1.0]));
    assert_eq!(bn.num_batches_tracked(), 0);
    assert_eq!(bn.weight().expect("w"), Some(vec![2.0, 3.0]));
    bn.reset_parameters().expect("reset");
    assert_eq!(bn.weight().expect("w"), Some(vec![1.0, 1.0]));
    assert_eq!(bn.bias().expect("b"), Some(vec![0.0, 0.0]));
}

#[test]
fn results_are_bit_identical_run_after_run() {
    let Some(ctx) = common::context() else { return };
    let shape = [300, 7, 33];
    let numel: usize = shape.iter().product();
    let x = common::Rng(3).normals(numel, 2.0, 3.0);
    let dy = common::Rng(4).normals(numel, 0.0, 1.0);
    let run = || {
        let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(7)).expect("bn");
        let y = bn
            .forward(&Tensor::from_slice(&ctx, &x, &shape).expect("x"))
            .expect("forward")
            .to_vec()
            .expect("read");
        let g = bn
            .backward(&Tensor::from_slice(&ctx, &dy, &shape).expect("dy"))
            .expect("bw");
        (
            y,
            g.grad_input.to_vec().expect("read"),
            g.grad_weight.expect("gw").to_vec().expect("read"),
            bn.running_mean().expect("rm"),
            bn.running_var().expect("rv"),
        )
    };
    let first = run();
    for _ in 0..3 {
        let again = run();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&first.0), bits(&again.0));
        assert_eq!(bits(&first.1), bits(&again.1));
        assert_eq!(bits(&first.2), bits(&again.2));
        assert_eq!(first.3, again.3);
        assert_eq!(first.4, again.4);
    }
}

/// PyTorch adds eps in the input's type (f32): a running variance of
/// -1e-5 plus eps = 1e-5 is exactly 0 there (invstd infinite, where f64
/// arithmetic gives 2e6). The reference and the GPU module agree with it.
#[test]
fn eps_is_added_as_an_f32() {
    let (eps, var) = (1e-5, -1e-5f32);
    let cfg = BatchNorm1dConfig::new(1).eps(eps);
    let mut reference = cpu::BatchNorm1d::new(cfg.clone()).expect("cpu");
    reference.eval();
    reference.set_running_var(&[var]).expect("rv");
    let x = [1.0f32, 2.0];
    let want = reference.forward(&x, &[2, 1]).expect("cpu forward");
    let invstd = 1.0 / (f64::from(var) + f64::from(eps as f32)).sqrt();
    for (got, v) in want.iter().zip(x) {
        let exact = (f64::from(v) * invstd) as f32;
        assert!(
            got == &exact || (got.is_nan() && exact.is_nan()),
            "eps {eps:e}: {got} vs {exact}"
        );
    }
    let Some(ctx) = common::context() else { return };
    let mut gpu = BatchNorm1d::new(&ctx, cfg).expect("bn");
    gpu.eval();
    gpu.set_running_var(&[var]).expect("rv");
    let y = gpu
        .forward(&Tensor::from_slice(&ctx, &x, &[2, 1]).expect("x"))
        .expect("forward")
        .to_vec()
        .expect("read");
    for (g, w) in y.iter().zip(&want) {
        let same = g == w || (g.is_nan() && w.is_nan()) || ((g - w) / w).abs() < 1e-6;
        assert!(same, "eps {eps:e}: gpu {g} vs reference {w}");
    }
}
