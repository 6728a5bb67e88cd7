//! Work recorded into an application's encoder (`encode_forward`,
//! `encode_backward`): the checks before anything is recorded, the
//! uniforms it keeps, and the per-channel terms buffers it holds until it
//! has run (issue #12, findings 4 and 6, and the review's terms finding;
//! issue #16: the buffers are recycled once their encoders are done).

mod common;

use common::encoder;
#[path = "recorded_work/recycling.rs"]
mod recycling;

use wgpu_batchnorm::{cpu, wgpu, BatchNorm1d, BatchNormConfig, Error, Tensor};

fn f64s(v: &[f32]) -> Vec<f64> {
    common::f64s(v)
}

/// #12.4: a tensor whose recorded work wgpu would reject is an `Err`
/// before anything is recorded, and nothing is committed.
#[test]
fn encode_forward_checks_what_the_recorded_work_needs() {
    let Some(ctx) = common::context() else { return };
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test/storage-only"),
        size: 60,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    // 15 values in 60 bytes: the kernels read whole vec4s, so they need a
    // padded copy, which needs COPY_SRC.
    let x = Tensor::from_buffer(&ctx, buffer, 0, &[3, 5]).expect("wrap");
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(5)).expect("bn");
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    let err = bn
        .encode_forward(&mut encoder, &x)
        .expect_err("COPY_SRC missing");
    assert!(matches!(err, Error::BufferUsage { .. }), "{err}");
    assert_eq!(bn.num_batches_tracked(), 0);
    ctx.queue().submit([encoder.finish()]);
    ctx.synchronize()
        .expect("the encoder holds nothing invalid");
    // The module still works.
    let ok = Tensor::from_slice(&ctx, &[1.0; 15], &[3, 5]).expect("x");
    bn.forward(&ok).expect("forward");
    assert_eq!(bn.num_batches_tracked(), 1);
}

/// A residual whose padded copy cannot be made (no `COPY_SRC`) is an `Err`
/// before the input's own padded copy is recorded: the encoder holds
/// nothing, so it submits cleanly even after the input's buffer is gone.
#[test]
fn a_residual_that_cannot_be_copied_records_nothing() {
    let Some(ctx) = common::context() else { return };
    let buffer = |label: &str, usage: wgpu::BufferUsages| {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: 60,
            usage,
            mapped_at_creation: false,
        })
    };
    let storage = wgpu::BufferUsages::STORAGE;
    let x_buffer = buffer("test/x", storage | wgpu::BufferUsages::COPY_SRC);
    let x = Tensor::from_buffer(&ctx, x_buffer.clone(), 0, &[3, 5]).expect("wrap x");
    let r = Tensor::from_buffer(&ctx, buffer("test/residual", storage), 0, &[3, 5]).expect("r");
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(5)).expect("bn");
    let y = Tensor::zeros(&ctx, &[3, 5]).expect("y");
    let mut encoder = encoder(&ctx);
    let epilogue = wgpu_batchnorm::Epilogue::relu().with_residual(&r);
    let err = bn
        .encode_forward_fused_into(&mut encoder, &x, epilogue, &y)
        .expect_err("COPY_SRC missing on the residual");
    assert!(matches!(err, Error::BufferUsage { .. }), "{err}");
    assert_eq!(bn.num_batches_tracked(), 0);
    x_buffer.destroy();
    ctx.queue().submit([encoder.finish()]);
    ctx.synchronize()
        .expect("the encoder holds no copy of the destroyed input");
}

/// #12.6: work recorded into an application encoder keeps its own
/// parameters, whatever the module does before the encoder is submitted.
#[test]
fn recorded_work_keeps_its_own_parameters() {
    let Some(ctx) = common::context() else { return };
    let mut rng = common::Rng(6);
    let data1 = rng.normals(24, 2.0, 3.0);
    let x1 = Tensor::from_slice(&ctx, &data1, &[6, 4]).expect("x1");
    let x2 = Tensor::from_slice(&ctx, &rng.normals(40, -1.0, 0.5), &[2, 4, 5]).expect("x2");
    let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(4)).expect("cpu");
    let want = reference.forward(&data1, &[6, 4]).expect("cpu");
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    let y1 = bn.encode_forward(&mut encoder, &x1).expect("record");
    bn.eval();
    let _y2 = bn.forward(&x2).expect("eval forward runs first");
    ctx.queue().submit([encoder.finish()]);
    let got = y1.to_vec().expect("read");
    common::check_close("recorded training forward", &got, &f64s(&want), 1e-5)
        .expect("its own parameters");
    // Its running-statistics update ran too.
    let rm = bn.running_mean().expect("rm").expect("some");
    let want_rm = f64s(&reference.running_mean().expect("some"));
    common::check_close("running_mean", &rm, &want_rm, 1e-6).expect("running_mean");
}

/// #12 (review): a forward recorded into an application's encoder keeps
/// its per-channel terms buffer to itself while the encoder may still run:
/// later forwards, which recycle the buffers of forwards no one reads any
/// more, never take it while the encoder is unsubmitted.
#[test]
fn recorded_work_never_shares_a_recycled_terms_buffer() {
    let Some(ctx) = common::context() else { return };
    let mut rng = common::Rng(16);
    let xs: Vec<Vec<f32>> = (0..3)
        .map(|i| rng.normals(24, i as f64 * 5.0, 1.0 + i as f64))
        .collect();
    let dy = rng.normals(24, 0.0, 1.0);
    let t = |v: &[f32]| Tensor::from_slice(&ctx, v, &[6, 4]).expect("tensor");
    let mut reference = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
    for x in &xs {
        reference.forward(&t(x)).expect("forward");
    }
    let want = reference.backward(&t(&dy)).expect("backward");
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    bn.encode_forward(&mut encoder, &t(&xs[0])).expect("record");
    bn.forward(&t(&xs[1])).expect("forward 2");
    bn.forward(&t(&xs[2])).expect("forward 3");
    ctx.queue().submit([encoder.finish()]);
    let got = bn.backward(&t(&dy)).expect("backward");
    let read = |g: &Tensor| g.to_vec().expect("read");
    common::check_close(
        "grad_input",
        &read(&got.grad_input),
        &f64s(&read(&want.grad_input)),
        1e-5,
    )
    .expect("the last forward's terms");
}

/// Recorded work and the module's own submissions never share uniforms:
/// encoders recorded earlier and submitted from another thread while the
/// module runs forwards of another shape leave every one of those
/// forwards its own shape and statistics (the module writes its uniforms
/// before it submits; an encoder submitted in between once copied its own
/// over them).
#[test]
fn recorded_work_submitted_from_another_thread_keeps_to_its_own_uniforms() {
    let Some(ctx) = common::context() else { return };
    let mut rng = common::Rng(71);
    let (recorded_shape, shape) = ([6usize, 4], [10usize, 4]);
    let x1 = Tensor::from_slice(&ctx, &rng.normals(24, 50.0, 9.0), &recorded_shape).expect("x1");
    let data = rng.normals(40, -3.0, 0.25);
    let x2 = Tensor::from_slice(&ctx, &data, &shape).expect("x2");
    let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(4)).expect("cpu");
    let want = f64s(&reference.forward(&data, &shape).expect("cpu"));
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
    let recorded: Vec<wgpu::CommandBuffer> = (0..48)
        .map(|_| {
            let mut e = encoder(&ctx);
            bn.encode_forward(&mut e, &x1).expect("record");
            e.finish()
        })
        .collect();
    let queue = ctx.queue().clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = done.clone();
    let submitter = std::thread::spawn(move || {
        for (i, cb) in recorded.into_iter().enumerate() {
            queue.submit([cb]);
            std::thread::sleep(std::time::Duration::from_micros(300 + 500 * (i as u64 % 5)));
        }
        finished.store(true, std::sync::atomic::Ordering::Release);
    });
    let y = Tensor::zeros(&ctx, &shape).expect("y");
    let mut i = 0;
    while !done.load(std::sync::atomic::Ordering::Acquire) || i < 8 {
        bn.forward_into(&x2, &y).expect("forward");
        common::check_close(
            &format!("forward {i}"),
            &y.to_vec().expect("read"),
            &want,
            1e-5,
        )
        .expect("its own uniforms");
        i += 1;
    }
    submitter.join().expect("submitter");
}

/// An eval forward's terms describe the state it normalised with, even
/// when a training forward recorded earlier updates the running statistics
/// before the backward: the eval forward writes its terms at once while
/// such an encoder may still run (its terms were once computed lazily,
/// from the updated state, at the backward).
#[test]
fn an_eval_backward_after_a_late_recorded_training_forward_uses_the_eval_state() {
    let Some(ctx) = common::context() else { return };
    let mut rng = common::Rng(81);
    let shape = [8usize, 4];
    let x1 = rng.normals(32, 20.0, 6.0);
    let (x2, dy) = (rng.normals(32, 0.5, 2.0), rng.normals(32, 0.0, 1.0));
    let t = |v: &[f32]| Tensor::from_slice(&ctx, v, &shape).expect("tensor");
    // The eval forward sees the initial state (the recorded update has not
    // run yet): the reference is a fresh module in eval.
    let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(4)).expect("cpu");
    reference.eval();
    let want_y = f64s(&reference.forward(&x2, &shape).expect("cpu forward"));
    let want_dx = f64s(&reference.backward(&dy).expect("cpu backward").grad_input);
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
    let mut e = encoder(&ctx);
    bn.encode_forward(&mut e, &t(&x1))
        .expect("record training forward");
    bn.eval();
    let y = bn.forward(&t(&x2)).expect("eval forward");
    ctx.queue().submit([e.finish()]);
    ctx.synchronize().expect("sync");
    let rv = bn.running_var().expect("rv").expect("some");
    assert!(
        rv.iter().all(|&v| v > 2.0),
        "the recorded update ran: {rv:?}"
    );
    let g = bn.backward(&t(&dy)).expect("eval backward");
    common::check_close("eval output", &y.to_vec().expect("read"), &want_y, 1e-5).expect("y");
    common::check_close(
        "grad_input",
        &g.grad_input.to_vec().expect("read"),
        &want_dx,
        1e-5,
    )
    .expect("the eval forward's invstd");
}

/// #16: a recorded eval forward of a large input with few rows (which
/// CPU adapters normalise in `eval_prepare -> normalize` rather than the
/// column kernel) and its recorded backward match the reference, after a
/// training step moved the running statistics, for C % 4 == 0 and odd C,
/// with a rejected call between the forward and its backward.
#[test]
fn recorded_eval_of_few_wide_rows_matches_the_reference() {
    let Some(ctx) = common::context() else { return };
    for shape in [[64usize, 2048], [40, 2050], [6, 16_384]] {
        let (n, c) = (shape[0], shape[1]);
        let mut rng = common::Rng(73);
        let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
        let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("cpu");
        let weight = rng.normals(c, 1.0, 0.5);
        let bias = rng.normals(c, 0.0, 2.0);
        bn.set_weight(&weight).expect("weight");
        bn.set_bias(&bias).expect("bias");
        reference.set_weight(&weight).expect("weight");
        reference.set_bias(&bias).expect("bias");
        let x0 = rng.normals(n * c, 3.0, 2.0);
        let t = |v: &[f32]| Tensor::from_slice(&ctx, v, &shape).expect("tensor");
        bn.forward(&t(&x0)).expect("train forward");
        reference.forward(&x0, &shape).expect("cpu forward");
        bn.eval();
        reference.eval();
        let (x1, dy) = (rng.normals(n * c, 2.0, 3.0), rng.normals(n * c, 0.0, 1.0));
        let mut e = encoder(&ctx);
        let y = bn.encode_forward(&mut e, &t(&x1)).expect("recorded eval");
        // A rejected call between the forward and its backward changes
        // nothing.
        let bad = Tensor::from_slice(&ctx, &vec![1.0; 2 * (c + 1)], &[2, c + 1]).expect("bad");
        assert!(bn.forward(&bad).is_err(), "channel count mismatch");
        let g = bn
            .encode_backward(&mut e, &t(&dy))
            .expect("recorded backward");
        ctx.queue().submit([e.finish()]);
        let want_y = f64s(&reference.forward(&x1, &shape).expect("cpu eval"));
        let want_g = reference.backward(&dy).expect("cpu backward");
        let read = |g: &Tensor| g.to_vec().expect("read");
        let at = |what: &str| format!("{shape:?} {what}");
        common::check_close(&at("y"), &read(&y), &want_y, 1e-5).expect("y");
        let want_dx = f64s(&want_g.grad_input);
        common::check_close(&at("dx"), &read(&g.grad_input), &want_dx, 1e-4).expect("dx");
        let gw = read(g.grad_weight.as_ref().expect("affine"));
        let want_gw = f64s(&want_g.grad_weight.expect("affine"));
        common::check_close(&at("grad_weight"), &gw, &want_gw, 1e-4).expect("gw");
    }
}
