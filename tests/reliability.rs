//! Reliability: shared contexts across threads, flat resource use over long
//! training runs, GPU faults turned into errors.

mod common;

use wgpu_batchnorm::{BatchNorm1d, BatchNorm1dConfig, Error, GpuContext, Tensor};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn public_types_are_thread_safe() {
    assert_send_sync::<GpuContext>();
    assert_send_sync::<Tensor>();
    assert_send::<BatchNorm1d>();
    assert_send_sync::<BatchNorm1d>();
}

fn train_run(ctx: &GpuContext, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut bn = BatchNorm1d::new(ctx, BatchNorm1dConfig::new(20)).expect("bn");
    let mut rng = common::Rng(seed);
    let mut last = Vec::new();
    let mut grads = Vec::new();
    for _ in 0..10 {
        let x = Tensor::from_slice(ctx, &rng.normals(32 * 20, 1.0, 2.0), &[32, 20]).expect("x");
        last = bn.forward(&x).expect("forward").to_vec().expect("read");
        let dy = Tensor::from_slice(ctx, &rng.normals(32 * 20, 0.0, 1.0), &[32, 20]).expect("dy");
        grads = bn
            .backward(&dy)
            .expect("bw")
            .grad_input
            .to_vec()
            .expect("read");
    }
    (last, grads, bn.running_var().expect("rv").expect("some"))
}

#[test]
fn eight_threads_share_one_context() {
    let Some(ctx) = common::context() else { return };
    let single: Vec<_> = (0..8).map(|t| train_run(&ctx, 100 + t)).collect();
    let threaded: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let ctx = ctx.clone();
                s.spawn(move || train_run(&ctx, 100 + t))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(single, threaded);
}

/// Contexts created, used (their pipelines compiled) and dropped on six
/// threads at once, some dropped by a tensor that outlives its module and
/// context variable: device creation, compilation and teardown take turns
/// (NVIDIA's driver deadlocked when they overlapped), results stay right,
/// and nothing waits for itself.
#[test]
fn contexts_made_and_dropped_on_many_threads_at_once() {
    if common::context().is_none() {
        return;
    }
    let want = train_run(&common::context().expect("ctx"), 7);
    std::thread::scope(|s| {
        for t in 0..6 {
            let want = &want;
            s.spawn(move || {
                for round in 0..3 {
                    let ctx = GpuContext::with_options(common::options()).expect("context");
                    if (t + round) % 2 == 0 {
                        assert_eq!(&train_run(&ctx, 7), want);
                    } else {
                        // The tensor holds the context's last handle.
                        let x = Tensor::from_slice(&ctx, &[1.0, 3.0], &[2, 1]).expect("x");
                        let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(1)).expect("bn");
                        let y = bn.forward(&x).expect("forward");
                        drop((bn, ctx));
                        let y = y.to_vec().expect("read");
                        assert!(
                            (y[0] + 1.0).abs() < 1e-4 && (y[1] - 1.0).abs() < 1e-4,
                            "{y:?}"
                        );
                    }
                }
            });
        }
    });
}

#[test]
fn long_training_keeps_gpu_buffers_flat() {
    let Some(ctx) = common::context() else { return };
    let steps: usize = std::env::var("BN_SOAK_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(20)).expect("bn");
    let x = Tensor::from_slice(&ctx, &common::Rng(1).normals(640, 0.0, 1.0), &[32, 20]).expect("x");
    let dy =
        Tensor::from_slice(&ctx, &common::Rng(2).normals(640, 0.0, 1.0), &[32, 20]).expect("dy");
    let step = |bn: &mut BatchNorm1d| {
        bn.forward(&x).expect("forward");
        bn.backward(&dy).expect("backward");
    };
    // Two steps reach the steady state: a forward's statistics stay with
    // it until the next forward commits, so two terms buffers alternate.
    step(&mut bn);
    step(&mut bn);
    ctx.synchronize().expect("sync");
    let baseline = ctx.live_buffers();
    for i in 0..steps {
        step(&mut bn);
        if i % 100 == 0 {
            ctx.synchronize().expect("sync");
            assert_eq!(ctx.live_buffers(), baseline, "after {i} steps");
        }
    }
    ctx.synchronize().expect("sync");
    assert_eq!(ctx.live_buffers(), baseline);
    assert_eq!(bn.num_batches_tracked(), steps as u64 + 2);
    let rv = bn.running_var().expect("rv").expect("some");
    assert!(rv.iter().all(|v| v.is_finite()));
}

#[test]
fn buffers_are_released_with_their_owners() {
    let Some(ctx) = common::context() else { return };
    let before = ctx.live_buffers();
    {
        let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(8)).expect("bn");
        let x = Tensor::zeros(&ctx, &[16, 8]).expect("x");
        let _y = bn.forward(&x).expect("forward");
        assert!(ctx.live_buffers().0 > before.0);
    }
    assert_eq!(ctx.live_buffers(), before);
}

#[test]
fn a_lost_device_turns_every_call_into_an_error() {
    let Some(_) = common::context() else { return };
    let ctx = GpuContext::new().expect("own context");
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(4)).expect("bn");
    let x = Tensor::zeros(&ctx, &[8, 4]).expect("x");
    bn.forward(&x).expect("forward before loss");
    ctx.device().destroy();
    let _ = ctx.synchronize();
    let lost = |r: Result<(), Error>| matches!(r, Err(Error::DeviceLost(_)));
    assert!(lost(bn.forward(&x).map(|_| ())), "forward");
    assert!(lost(bn.backward(&x).map(|_| ())), "backward");
    assert!(lost(x.to_vec().map(|_| ())), "to_vec");
    assert!(lost(Tensor::zeros(&ctx, &[4]).map(|_| ())), "zeros");
    assert!(lost(bn.running_mean().map(|_| ())), "running_mean");
    assert!(lost(ctx.synchronize()), "synchronize");
    assert_eq!(bn.num_batches_tracked(), 1);
}

#[test]
fn missing_buffer_usages_are_errors_before_any_gpu_work() {
    let Some(ctx) = common::context() else { return };
    // An application buffer without COPY_SRC cannot be read back: the
    // library checks before recording anything and names what is missing.
    let buf = ctx
        .device()
        .create_buffer(&wgpu_batchnorm::wgpu::BufferDescriptor {
            label: Some("test/no-copy-src"),
            size: 64,
            usage: wgpu_batchnorm::wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
    let t = Tensor::from_buffer(&ctx, buf, 0, &[16]).expect("wrap");
    assert!(matches!(
        t.to_vec(),
        Err(Error::BufferUsage {
            missing: wgpu_batchnorm::wgpu::BufferUsages::COPY_SRC,
            ..
        })
    ));
    // The context keeps working afterwards.
    let ok = Tensor::from_slice(&ctx, &[1.0, 2.0], &[2]).expect("x");
    assert_eq!(ok.to_vec().expect("read"), vec![1.0, 2.0]);
}
