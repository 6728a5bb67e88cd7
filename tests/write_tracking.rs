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
