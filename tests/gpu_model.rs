//! The choices a GPU's merge model makes, run on any adapter with
//! `Tuning::thread_partials` off (workgroup merges, no per-thread
//! partials, the column kernels' GPU rules), against the reference: on
//! lavapipe the default merge model is a CPU adapter's, so CI would
//! otherwise reach these plans only where a test forces the column
//! kernels.

mod common;

use common::{assert_matches_reference, Rng};
use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNormConfig, Tensor};

/// Up to 32 rows of at least 32768 channels (a multiple of 4) take the
/// column kernels on GPUs, 16 rows otherwise: each side of both limits,
/// odd C at 17 rows, and data far from zero.
#[test]
fn wide_rows_on_either_side_of_the_column_limits_match_the_reference() {
    // The GPU merge model, the column kernels chosen by its rules.
    let Some(ctx) = common::context_tuned(Some(false), None) else {
        return;
    };
    let modes = [true, true, false, true];
    for (i, shape) in [
        [16usize, 32_764],
        [17, 32_764],
        [17, 32_768],
        [32, 32_768],
        [33, 32_768],
        [17, 32_771],
    ]
    .iter()
    .enumerate()
    {
        assert_matches_reference(&ctx, shape, &modes, 300 + i as u64, 1e4, 0.1);
    }
}

/// Eval forwards of few rows of many channels under the GPU merge model
/// (the split plans' normalize straight from the state where the training
/// forward takes the column kernels), with and without affine parameters,
/// running statistics from a training step and then set by hand (zero and
/// tiny variances, a mean far from the data), then a backward, which needs
/// the terms the eval did not write, and a second eval after it.
#[test]
fn eval_of_few_rows_of_many_channels_matches_the_reference() {
    let Some(ctx) = common::context_tuned(Some(false), None) else {
        return;
    };
    let mut rng = Rng(77);
    for shape in [[6usize, 1024], [10, 1001], [3, 4097], [16, 32_764]] {
        for affine in [true, false] {
            let (n, c) = (shape[0], shape[1]);
            let cfg = BatchNormConfig::new(c).affine(affine);
            let mut gpu = BatchNorm1d::new(&ctx, cfg.clone()).expect("gpu module");
            let mut reference = cpu::BatchNorm1d::new(cfg).expect("cpu module");
            if affine {
                let (w, b) = (rng.normals(c, 1.0, 0.5), rng.normals(c, 0.0, 2.0));
                gpu.set_weight(&w).expect("weight");
                reference.set_weight(&w).expect("weight");
                gpu.set_bias(&b).expect("bias");
                reference.set_bias(&b).expect("bias");
            }
            let at = |what: &str| format!("{shape:?} affine={affine} {what}");
            // A training step sets the running statistics.
            let x = rng.normals(n * c, 3.0, 2.0);
            let tx = Tensor::from_slice(&ctx, &x, &shape).expect("x");
            gpu.forward(&tx).expect("train forward");
            reference.forward(&x, &shape).expect("cpu train forward");
            gpu.eval();
            reference.eval();
            for step in 0..3 {
                if step == 2 {
                    // By hand: zero and tiny variances, a far mean.
                    let mut rm = rng.normals(c, 0.0, 1.0);
                    let mut rv: Vec<f32> = rng.normals(c, 0.0, 1.0).iter().map(|v| v * v).collect();
                    rm[0] = 1e4;
                    rv[1] = 0.0;
                    rv[c - 1] = 1e-30;
                    gpu.set_running_mean(&rm).expect("running mean");
                    reference.set_running_mean(&rm).expect("running mean");
                    gpu.set_running_var(&rv).expect("running var");
                    reference.set_running_var(&rv).expect("running var");
                }
                let x = rng.normals(n * c, 0.5, 3.0);
                let tx = Tensor::from_slice(&ctx, &x, &shape).expect("x");
                let y = gpu
                    .forward(&tx)
                    .expect("eval forward")
                    .to_vec()
                    .expect("read");
                let want = reference.forward(&x, &shape).expect("cpu eval forward");
                common::check_per_channel(&at("eval output"), &y, &want, c, 2e-5);
                if step == 1 {
                    continue;
                }
                let dy = rng.normals(n * c, 0.0, 1.0);
                let g = gpu
                    .backward(&Tensor::from_slice(&ctx, &dy, &shape).expect("dy"))
                    .expect("backward");
                let cg = reference.backward(&dy).expect("cpu backward");
                let gi = g.grad_input.to_vec().expect("read");
                common::check_per_channel(&at("eval grad_input"), &gi, &cg.grad_input, c, 2e-5);
            }
        }
    }
}
