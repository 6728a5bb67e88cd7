//! Backward sees every write the library made over the forward's input,
//! through any tensor on the same buffer: another `Tensor::from_buffer` of
//! it, a wrap of a library tensor's own buffer, a range that only partly
//! overlaps; and only those (tensors side by side in one buffer, an arena,
//! do not disturb each other).

mod common;

use wgpu_batchnorm::{wgpu, BatchNorm1d, BatchNormConfig, Error, GpuContext, Tensor};

const SHAPE: [usize; 2] = [8, 4];

/// A buffer of `bytes` that tensors can be wrapped on, read back and
/// written.
fn arena(ctx: &GpuContext, bytes: u64) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test/arena"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// The offset alignment of `from_buffer`, at least 128 bytes (one tensor).
fn step(ctx: &GpuContext) -> u64 {
    u64::from(ctx.device().limits().min_storage_buffer_offset_alignment).max(128)
}

fn module(ctx: &GpuContext) -> BatchNorm1d {
    BatchNorm1d::new(ctx, BatchNormConfig::new(4)).expect("bn")
}

#[test]
fn writes_through_another_wrap_of_the_buffer_are_seen() {
    let Some(ctx) = common::context() else { return };
    let mut rng = common::Rng(5);
    let (xs, zs) = (rng.normals(32, 1.0, 2.0), rng.normals(32, 40.0, 9.0));
    let dy = Tensor::from_slice(&ctx, &rng.normals(32, 0.0, 1.0), &SHAPE).expect("dy");
    let z = Tensor::from_slice(&ctx, &zs, &SHAPE).expect("z");
    let buffer = arena(&ctx, 2 * step(&ctx));
    let wrap =
        |offset: u64| Tensor::from_buffer(&ctx, buffer.clone(), offset, &SHAPE).expect("wrap");

    // Another layer writes its output over the input, through a new wrap.
    let x = wrap(0);
    x.write_from_slice(&xs).expect("fill");
    let mut bn = module(&ctx);
    bn.forward(&x).expect("forward");
    module(&ctx).forward_into(&z, &wrap(0)).expect("overwrite");
    assert!(matches!(
        bn.backward(&dy),
        Err(Error::ModifiedSinceForward { what: "input" })
    ));

    // A write that covers only part of the input (a wrap 16 bytes in, where
    // the device allows that offset; else the same range).
    let part = if 16 % u64::from(ctx.device().limits().min_storage_buffer_offset_alignment) == 0 {
        16
    } else {
        0
    };
    x.write_from_slice(&xs).expect("refill");
    bn.forward(&x).expect("forward");
    let piece = Tensor::from_buffer(&ctx, buffer.clone(), part, &[1, 4]).expect("piece");
    piece
        .write_from_slice(&[0.0; 4])
        .expect("partial overwrite");
    assert!(matches!(
        bn.backward(&dy),
        Err(Error::ModifiedSinceForward { what: "input" })
    ));

    // A wrap of a library tensor's own buffer.
    let own = Tensor::from_slice(&ctx, &xs, &SHAPE).expect("own");
    bn.forward(&own).expect("forward");
    let again =
        Tensor::from_buffer(&ctx, own.buffer().clone(), own.offset(), &SHAPE).expect("wrap");
    again.write_from_slice(&zs).expect("overwrite");
    assert!(bn.backward(&dy).is_err());
}

/// The input and another tensor side by side in one buffer, each wrapped
/// on its own (an activation arena): writes to the other tensor are not
/// writes to the input, and the gradients are those of separate buffers.
#[test]
fn tensors_side_by_side_in_one_buffer_do_not_disturb_each_other() {
    let Some(ctx) = common::context() else { return };
    let mut rng = common::Rng(6);
    let xs = rng.normals(32, 1.0, 2.0);
    let dy = Tensor::from_slice(&ctx, &rng.normals(32, 0.0, 1.0), &SHAPE).expect("dy");
    let want = {
        let mut bn = module(&ctx);
        bn.forward(&Tensor::from_slice(&ctx, &xs, &SHAPE).expect("x"))
            .expect("forward");
        bn.backward(&dy)
            .expect("backward")
            .grad_input
            .to_vec()
            .expect("read")
    };
    let at = step(&ctx);
    let buffer = arena(&ctx, 2 * at);
    let x = Tensor::from_buffer(&ctx, buffer.clone(), 0, &SHAPE).expect("x");
    let next = Tensor::from_buffer(&ctx, buffer.clone(), at, &SHAPE).expect("next");
    x.write_from_slice(&xs).expect("fill");
    let mut bn = module(&ctx);
    bn.forward(&x).expect("forward");
    // Later writes next to the input: a refill and another layer's output.
    next.write_from_slice(&xs).expect("refill the neighbour");
    module(&ctx)
        .forward_into(&dy, &next)
        .expect("another layer's output");
    let got = bn
        .backward(&dy)
        .expect("backward")
        .grad_input
        .to_vec()
        .expect("read");
    assert_eq!(got, want);
}

/// An input and an output of one call in one buffer, even at other bytes:
/// a dispatch may not bind one buffer both read-only and read-write, which
/// wgpu reports for recorded work only when the application finishes its
/// encoder. Every such call is `Aliasing` before anything is recorded, and
/// the module does not advance.
#[test]
fn an_input_and_an_output_in_one_buffer_are_rejected_up_front() {
    let Some(ctx) = common::context() else { return };
    let mut rng = common::Rng(7);
    let at = step(&ctx);
    let buffer = arena(&ctx, 3 * at);
    let wrap =
        |offset: u64| Tensor::from_buffer(&ctx, buffer.clone(), offset, &SHAPE).expect("wrap");
    let (x, y, z) = (wrap(0), wrap(at), wrap(2 * at));
    x.write_from_slice(&rng.normals(32, 1.0, 2.0))
        .expect("fill");
    let mut bn = module(&ctx);
    assert!(matches!(
        bn.forward_into(&x, &y),
        Err(Error::Aliasing { .. })
    ));
    let mut encoder = common::encoder(&ctx);
    assert!(matches!(
        bn.encode_forward_into(&mut encoder, &x, &y),
        Err(Error::Aliasing { .. })
    ));
    assert_eq!(bn.num_batches_tracked(), 0);
    // The encoder holds nothing wgpu rejects.
    let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    ctx.queue().submit([encoder.finish()]);
    assert!(pollster::block_on(scope.pop()).is_none());
    // A backward whose gradient shares the output gradient's buffer.
    let own = Tensor::from_slice(&ctx, &rng.normals(32, 1.0, 2.0), &SHAPE).expect("x");
    bn.forward(&own).expect("forward");
    z.write_from_slice(&rng.normals(32, 0.0, 1.0)).expect("dy");
    let mut g = bn.backward(&z).expect("backward");
    g.grad_input = y.clone();
    assert!(matches!(
        bn.backward_into(&z, &mut g),
        Err(Error::Aliasing { what: "grad_input" })
    ));
    assert_eq!(bn.num_batches_tracked(), 1);
}

/// A host write of an odd number of f16 values is whole 4-byte words: into
/// a tensor wrapped on a buffer (here a library tensor's own, wrapped
/// again) it would overwrite the 2 bytes after it, which are another
/// tensor's, so it is `Misaligned` there, as for an application's buffer.
#[cfg(feature = "f16")]
#[test]
fn odd_f16_writes_through_a_wrap_stay_inside_it() {
    let Some(ctx) = common::context() else { return };
    if !common::f16_or_skip(&ctx) {
        return;
    }
    use half::f16;
    let own = Tensor::from_f16(&ctx, &[f16::ONE; 64], &[8, 8]).expect("own");
    let wrap = Tensor::from_buffer_of(
        &ctx,
        own.buffer().clone(),
        0,
        &[3, 1],
        wgpu_batchnorm::DType::F16,
    )
    .expect("wrap");
    assert!(matches!(
        wrap.write_from_f16(&[f16::from_f32(2.0); 3]),
        Err(Error::Misaligned { .. })
    ));
    assert!(own.to_vec().expect("read").iter().all(|&v| v == 1.0));
}
