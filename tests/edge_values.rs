//! Edge values through every strategy: the vec4 the tensor's end cuts in
//! the rows reductions of odd C (virtual channels), and eval backwards,
//! which never read the input.

mod common;

use common::{check_close, context_with, f64s, Rng};
use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNormConfig, Tensor};

/// Odd `C` over rows of virtual channels: where the tensor ends inside a
/// vec4 of the last virtual row (N * C % 4 != 0), that vec4's values enter
/// the statistics once each, with their own channels, whatever they are
/// (NaN poisons only its channel; values near f32's limit rescale only
/// theirs), and the padding past the end never does.
#[test]
fn odd_channel_tails_keep_their_values() {
    let Some(ctx) = context_with(Some(false)) else {
        return;
    };
    for (i, &(n, c)) in [(131usize, 3usize), (130, 7), (129, 6), (67, 5), (97, 2)]
        .iter()
        .enumerate()
    {
        let numel = n * c;
        for tail in 0..3 {
            let mut rng = Rng(200 + i as u64);
            let mut x = rng.normals(numel, 5.0, 2.0);
            match tail {
                0 => x[numel - 1] = f32::NAN,
                1 => {
                    x[numel - 1] = 3e38;
                    x[numel - 2] = -3e38;
                }
                _ => x[numel - 1] = 1e4,
            }
            let dy = rng.normals(numel, 0.0, 1.0);
            let shape = [n, c];
            let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
            let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("module");
            let at = |what: &str| format!("({n}, {c}) tail {tail} {what}");
            let tx = Tensor::from_slice(&ctx, &x, &shape).expect("x");
            let y = gpu.forward(&tx).expect("forward").to_vec().expect("read");
            let want = reference.forward(&x, &shape).expect("cpu");
            check_close(&at("y"), &y, &f64s(&want), 2e-4).expect("y");
            let g = gpu
                .backward(&Tensor::from_slice(&ctx, &dy, &shape).expect("dy"))
                .expect("backward");
            let cg = reference.backward(&dy).expect("cpu backward");
            let gi = g.grad_input.to_vec().expect("read");
            check_close(&at("dx"), &gi, &f64s(&cg.grad_input), 1e-3).expect("dx");
            let gw = g.grad_weight.expect("affine").to_vec().expect("read");
            let want_gw = f64s(&cg.grad_weight.expect("affine"));
            check_close(&at("grad_weight"), &gw, &want_gw, 1e-3).expect("gw");
            let gb = g.grad_bias.expect("affine").to_vec().expect("read");
            let want_gb = f64s(&cg.grad_bias.expect("affine"));
            check_close(&at("grad_bias"), &gb, &want_gb, 1e-3).expect("gb");
            let rm = gpu.running_mean().expect("read").expect("tracked");
            let want_rm = f64s(&reference.running_mean().expect("tracked"));
            check_close(&at("running_mean"), &rm, &want_rm, 1e-5).expect("rm");
            let rv = gpu.running_var().expect("read").expect("tracked");
            let want_rv = f64s(&reference.running_var().expect("tracked"));
            check_close(&at("running_var"), &rv, &want_rv, 1e-5).expect("rv");
        }
    }
}

/// PyTorch's eval backward is `dx = dy * weight * invstd(running)`: it
/// never reads x, so a NaN or infinite input leaves dx finite (its
/// channel's grad_weight, `sum dy * x_hat`, is NaN). In every layout and
/// strategy, as in the reference.
#[test]
fn eval_backward_does_not_read_the_input() {
    for columns in [Some(true), Some(false)] {
        let Some(ctx) = context_with(columns) else {
            return;
        };
        for shape in [
            vec![6usize, 8],
            vec![6, 7],
            vec![300, 16],
            vec![300, 5],
            vec![40, 3, 8],
            vec![40, 3, 7],
            vec![2, 3, 301],
        ] {
            let c = shape[1];
            let numel: usize = shape.iter().product();
            let mut rng = Rng(7);
            let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
            let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("module");
            let w = rng.normals(c, 1.0, 0.3);
            gpu.set_weight(&w).expect("w");
            reference.set_weight(&w).expect("w");
            // One training step for finite running statistics.
            let x0 = rng.normals(numel, 2.0, 1.5);
            gpu.forward(&Tensor::from_slice(&ctx, &x0, &shape).expect("x"))
                .expect("train");
            reference.forward(&x0, &shape).expect("cpu train");
            gpu.eval();
            reference.eval();
            let mut x = rng.normals(numel, 2.0, 1.5);
            x[0] = f32::NAN;
            x[numel / 2] = f32::INFINITY;
            x[numel - 1] = f32::NEG_INFINITY;
            let dy = rng.normals(numel, 0.0, 1.0);
            let at = |what: &str| format!("{columns:?} {shape:?} {what}");
            let y = gpu
                .forward(&Tensor::from_slice(&ctx, &x, &shape).expect("x"))
                .expect("eval")
                .to_vec()
                .expect("read");
            let want = reference.forward(&x, &shape).expect("cpu eval");
            check_close(&at("y"), &y, &f64s(&want), 2e-4).expect("y");
            let g = gpu
                .backward(&Tensor::from_slice(&ctx, &dy, &shape).expect("dy"))
                .expect("backward");
            let cg = reference.backward(&dy).expect("cpu backward");
            let gi = g.grad_input.to_vec().expect("read");
            assert!(gi.iter().all(|v| v.is_finite()), "{}", at("dx finite"));
            check_close(&at("dx"), &gi, &f64s(&cg.grad_input), 1e-5).expect("dx");
            let gw = g.grad_weight.expect("affine").to_vec().expect("read");
            let want_gw = f64s(&cg.grad_weight.expect("affine"));
            check_close(&at("grad_weight"), &gw, &want_gw, 1e-4).expect("gw");
        }
    }
}
