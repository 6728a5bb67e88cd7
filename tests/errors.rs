//! Every public entry point with bad input returns a clear `Err` (never a
//! panic), with PyTorch's wording where PyTorch raises, and leaves the
//! module's state exactly as it was.

mod common;

use wgpu_batchnorm::{BatchNorm1d, BatchNorm1dConfig, Error, GpuContext, Tensor};

/// Observable state of a module.
#[derive(Debug, PartialEq)]
struct Snapshot {
    weight: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
    running_mean: Option<Vec<f32>>,
    running_var: Option<Vec<f32>>,
    nbt: u64,
}

fn snapshot(bn: &BatchNorm1d) -> Snapshot {
    Snapshot {
        weight: bn.weight().expect("weight"),
        bias: bn.bias().expect("bias"),
        running_mean: bn.running_mean().expect("rm"),
        running_var: bn.running_var().expect("rv"),
        nbt: bn.num_batches_tracked(),
    }
}

/// A module that has seen one training batch, with its last forward's output
/// gradient for `dy` recorded so we can check backward still refers to it.
fn trained(ctx: &GpuContext) -> (BatchNorm1d, Tensor, Vec<f32>) {
    let mut bn = BatchNorm1d::new(ctx, BatchNorm1dConfig::new(4)).expect("bn");
    let mut rng = common::Rng(7);
    let x = Tensor::from_slice(ctx, &rng.normals(32, 1.0, 2.0), &[8, 4]).expect("x");
    bn.forward(&x).expect("forward");
    let dy = Tensor::from_slice(ctx, &rng.normals(32, 0.0, 1.0), &[8, 4]).expect("dy");
    let gi = bn
        .backward(&dy)
        .expect("backward")
        .grad_input
        .to_vec()
        .expect("read");
    (bn, dy, gi)
}

#[test]
fn forward_errors_use_pytorch_wording_and_change_nothing() {
    let Some(ctx) = common::context() else { return };
    let (mut bn, dy, gi) = trained(&ctx);
    let before = snapshot(&bn);
    let cases: Vec<(Vec<usize>, bool, &str)> = vec![
        (vec![4], true, "expected 2D or 3D input (got 1D input)"),
        (vec![2, 4, 2, 2], true, "expected 2D or 3D input (got 4D input)"),
        (vec![], true, "expected 2D or 3D input (got 0D input)"),
        (
            vec![1, 4],
            true,
            "Expected more than 1 value per channel when training, got input size torch.Size([1, 4])",
        ),
        (
            vec![1, 4, 1],
            true,
            "Expected more than 1 value per channel when training, got input size torch.Size([1, 4, 1])",
        ),
        (vec![8, 5], true, "running_mean should contain 5 elements not 4"),
        (vec![8, 3, 2], false, "running_mean should contain 3 elements not 4"),
    ];
    for (shape, train, want) in cases {
        if train {
            bn.train()
        } else {
            bn.eval()
        }
        let numel = shape.iter().product();
        let x = Tensor::from_slice(&ctx, &vec![0.5; numel], &shape).expect("x");
        let err = bn.forward(&x).expect_err("must fail");
        assert_eq!(err.to_string(), want, "shape {shape:?}");
        assert_eq!(snapshot(&bn), before, "state changed by {shape:?}");
    }
    // backward still differentiates the last successful forward
    bn.train();
    let again = bn
        .backward(&dy)
        .expect("backward")
        .grad_input
        .to_vec()
        .expect("read");
    assert_eq!(again, gi);
}

#[test]
fn weight_size_is_checked_without_running_stats() {
    let Some(ctx) = common::context() else { return };
    let cfg = BatchNorm1dConfig::new(4).track_running_stats(false);
    let mut bn = BatchNorm1d::new(&ctx, cfg).expect("bn");
    let x = Tensor::zeros(&ctx, &[8, 3]).expect("x");
    let err = bn.forward(&x).expect_err("mismatch");
    assert_eq!(err.to_string(), "weight should contain 3 elements not 4");
    // Eval without running stats still needs more than one value per channel.
    bn.eval();
    let err = bn
        .forward(&Tensor::zeros(&ctx, &[1, 4]).expect("x"))
        .expect_err("one value");
    assert!(matches!(err, Error::TooFewValues { .. }));
}

#[test]
fn without_buffers_any_channel_count_is_accepted_like_pytorch() {
    let Some(ctx) = common::context() else { return };
    let cfg = BatchNorm1dConfig::new(4)
        .track_running_stats(false)
        .affine(false);
    let mut bn = BatchNorm1d::new(&ctx, cfg.clone()).expect("bn");
    let mut cpu = wgpu_batchnorm::cpu::BatchNorm1d::new(cfg).expect("cpu");
    let data: Vec<f32> = (0..18).map(|v| (v * v) as f32).collect();
    let y = bn
        .forward(&Tensor::from_slice(&ctx, &data, &[6, 3]).expect("x"))
        .expect("forward")
        .to_vec()
        .expect("read");
    let want = cpu.forward(&data, &[6, 3]).expect("cpu");
    for (a, b) in y.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn backward_errors() {
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(4)).expect("bn");
    let dy = Tensor::zeros(&ctx, &[8, 4]).expect("dy");
    assert!(matches!(bn.backward(&dy), Err(Error::NoForward)));
    bn.forward(&Tensor::zeros(&ctx, &[8, 4]).expect("x"))
        .expect("forward");
    let wrong = Tensor::zeros(&ctx, &[4, 8]).expect("dy");
    assert!(matches!(
        bn.backward(&wrong),
        Err(Error::ShapeMismatch { .. })
    ));
    let other = GpuContext::new().expect("second context");
    let foreign = Tensor::zeros(&other, &[8, 4]).expect("dy");
    assert!(matches!(
        bn.backward(&foreign),
        Err(Error::ContextMismatch { .. })
    ));
    assert!(matches!(
        bn.forward(&foreign),
        Err(Error::ContextMismatch { .. })
    ));
    assert_eq!(bn.num_batches_tracked(), 1);
    // Parameter gradients handed to a module without affine parameters
    // are an error, not left as they were.
    let x = Tensor::from_slice(&ctx, &[1.0, 5.0, 2.0, 3.0, 4.0, 0.0], &[3, 2]).expect("x");
    let dy = Tensor::from_slice(&ctx, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]).expect("dy");
    let mut affine = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(2)).expect("bn");
    affine.forward(&x).expect("forward");
    let mut g = affine.backward(&dy).expect("backward");
    let mut plain = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(2).affine(false)).expect("bn");
    plain.forward(&x).expect("forward");
    assert!(matches!(
        plain.backward_into(&dy, &mut g),
        Err(Error::NotAvailable {
            name: "grad_weight",
            ..
        })
    ));
    g.grad_weight = None;
    assert!(matches!(
        plain.backward_into(&dy, &mut g),
        Err(Error::NotAvailable {
            name: "grad_bias",
            ..
        })
    ));
    g.grad_bias = None;
    plain
        .backward_into(&dy, &mut g)
        .expect("no parameter gradients");
}

#[test]
fn setter_and_getter_errors() {
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3)).expect("bn");
    let before = snapshot(&bn);
    assert!(matches!(
        bn.set_weight(&[1.0; 2]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        bn.set_bias(&[1.0; 4]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        bn.set_running_mean(&[]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        bn.set_running_var(&[1.0; 5]),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(snapshot(&bn), before);

    let cfg = BatchNorm1dConfig::new(3)
        .affine(false)
        .track_running_stats(false);
    let mut plain = BatchNorm1d::new(&ctx, cfg).expect("bn");
    assert!(matches!(
        plain.set_weight(&[1.0; 3]),
        Err(Error::NotAvailable { .. })
    ));
    assert!(matches!(
        plain.set_bias(&[1.0; 3]),
        Err(Error::NotAvailable { .. })
    ));
    assert!(matches!(
        plain.set_running_mean(&[1.0; 3]),
        Err(Error::NotAvailable { .. })
    ));
    assert!(matches!(
        plain.set_running_var(&[1.0; 3]),
        Err(Error::NotAvailable { .. })
    ));
    assert_eq!(plain.running_mean().expect("ok"), None);
    assert_eq!(plain.running_var().expect("ok"), None);
    assert_eq!(plain.weight().expect("ok"), None);
}

#[test]
fn config_errors() {
    let Some(ctx) = common::context() else { return };
    let bad = [
        BatchNorm1dConfig::new(0),
        BatchNorm1dConfig::new(3).eps(0.0),
        BatchNorm1dConfig::new(3).eps(-1e-5),
        BatchNorm1dConfig::new(3).eps(f64::NAN),
        BatchNorm1dConfig::new(3).eps(f64::INFINITY),
        // Finite and > 0 as an f64, but not as the kernels' f32.
        BatchNorm1dConfig::new(3).eps(1e39),
        BatchNorm1dConfig::new(3).eps(1e-50),
        // Subnormal as an f32: 0 on GPUs that flush subnormals.
        BatchNorm1dConfig::new(3).eps(1e-45),
        BatchNorm1dConfig::new(3).momentum(Some(-0.1)),
        BatchNorm1dConfig::new(3).momentum(Some(1.5)),
        BatchNorm1dConfig::new(3).momentum(Some(f64::NAN)),
    ];
    for cfg in bad {
        assert!(
            matches!(
                BatchNorm1d::new(&ctx, cfg.clone()),
                Err(Error::InvalidConfig { .. })
            ),
            "{cfg:?}"
        );
        assert!(wgpu_batchnorm::cpu::BatchNorm1d::new(cfg).is_err());
    }
}

#[test]
fn tensor_errors() {
    let Some(ctx) = common::context() else { return };
    assert!(matches!(
        Tensor::from_slice(&ctx, &[1.0, 2.0], &[3]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        Tensor::zeros(&ctx, &[usize::MAX, 2]),
        Err(Error::TooLarge(_))
    ));
    let max = ctx.device().limits().max_buffer_size;
    let too_big = (max / 4 + 1024) as usize;
    assert!(matches!(
        Tensor::zeros(&ctx, &[too_big]),
        Err(Error::TooLarge(_))
    ));
    let buf = ctx
        .device()
        .create_buffer(&wgpu_batchnorm::wgpu::BufferDescriptor {
            label: Some("test/app-buffer"),
            size: 1024,
            usage: wgpu_batchnorm::wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
    assert!(Tensor::from_buffer(&ctx, buf.clone(), 3, &[4]).is_err());
    assert!(Tensor::from_buffer(&ctx, buf.clone(), 0, &[1000]).is_err());
    let uniform = ctx
        .device()
        .create_buffer(&wgpu_batchnorm::wgpu::BufferDescriptor {
            label: Some("test/uniform"),
            size: 64,
            usage: wgpu_batchnorm::wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: false,
        });
    assert!(Tensor::from_buffer(&ctx, uniform, 0, &[4]).is_err());
    assert!(Tensor::from_buffer(&ctx, buf, 0, &[256]).is_ok());
}

#[test]
fn no_adapter_is_an_error_not_a_panic() {
    let opts = wgpu_batchnorm::ContextOptions {
        adapter_name: Some("no adapter is called this".into()),
        ..common::options()
    };
    assert!(matches!(
        GpuContext::with_options(opts),
        Err(Error::NoAdapter { .. })
    ));
    let opts = wgpu_batchnorm::ContextOptions {
        backends: wgpu_batchnorm::wgpu::Backends::empty(),
        ..Default::default()
    };
    assert!(GpuContext::with_options(opts).is_err());
}
