//! Statistics across devices: the shard protocol's errors and edges
//! (malformed structs, channels without buffers, empty inputs), through
//! `shard_moments` / `forward_with_moments` / `shard_grad_sums` /
//! `backward_with_sums`.

mod common;

use wgpu_batchnorm::{
    wgpu, BatchNorm1d, BatchNormConfig, Error, ShardGradSums, ShardMoments, Tensor,
};

/// Regression (#12.2): malformed public structs are errors, never panics,
/// and change nothing.
#[test]
fn shard_malformed_structs_are_errors() {
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
    let x = Tensor::from_slice(&ctx, &[1.0; 32], &[8, 4]).expect("x");
    let short = ShardMoments {
        count: 8,
        mean: vec![0.0; 4],
        m2: vec![],
    };
    assert!(matches!(
        bn.forward_with_moments(&x, &short),
        Err(Error::InvalidShard(_))
    ));
    assert!(matches!(
        ShardMoments::merge(std::slice::from_ref(&short)),
        Err(Error::InvalidShard(_))
    ));
    let negative = ShardMoments {
        count: 8,
        mean: vec![0.0; 4],
        m2: vec![-1.0; 4],
    };
    assert!(bn.forward_with_moments(&x, &negative).is_err());
    let overflow = ShardMoments {
        count: u64::MAX,
        mean: vec![0.0; 4],
        m2: vec![0.0; 4],
    };
    assert!(ShardMoments::merge(&[overflow.clone(), overflow]).is_err());
    assert_eq!(short.variance(7), None);
    assert_eq!(bn.num_batches_tracked(), 0);
    let good = bn.shard_moments(&x).expect("moments");
    bn.forward_with_moments(&x, &good).expect("forward");
    bn.shard_grad_sums(&x).expect("sums");
    let lopsided = ShardGradSums {
        count: 8,
        sum_dy: vec![0.0; 4],
        sum_dy_xhat: vec![0.0; 3],
    };
    assert!(matches!(
        bn.backward_with_sums(&x, &lopsided),
        Err(Error::InvalidShard(_))
    ));
    assert!(ShardGradSums::merge(&[lopsided]).is_err());
}

/// Regression (#12.10): without weights and running buffers, the shard
/// sums follow the input's channels, not num_features.
#[test]
fn shard_sums_follow_the_input_channels_without_buffers() {
    let Some(ctx) = common::context() else { return };
    let cfg = BatchNormConfig::new(4)
        .affine(false)
        .track_running_stats(false);
    let mut bn = BatchNorm1d::new(&ctx, cfg).expect("bn");
    let x = Tensor::from_slice(&ctx, &common::Rng(5).normals(48, 0.0, 1.0), &[8, 6]).expect("x");
    let m = bn.shard_moments(&x).expect("moments");
    assert_eq!(m.mean.len(), 6);
    bn.forward_with_moments(&x, &m).expect("forward");
    let dy = Tensor::from_slice(&ctx, &common::Rng(6).normals(48, 0.0, 1.0), &[8, 6]).expect("dy");
    let sums = bn.shard_grad_sums(&dy).expect("sums");
    assert_eq!(sums.sum_dy.len(), 6);
    let g = bn.backward_with_sums(&dy, &sums).expect("backward");
    assert!(g.grad_weight.is_none());
    assert_eq!(g.grad_input.shape(), &[8, 6]);
}

#[test]
fn shard_errors() {
    let Some(ctx) = common::context() else { return };
    assert!(ShardMoments::merge(&[]).is_err());
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    let x = Tensor::from_slice(&ctx, &[1.0; 12], &[4, 3]).expect("x");
    let m = bn.shard_moments(&x).expect("m");
    assert_eq!(bn.num_batches_tracked(), 0, "shard_moments changes nothing");
    let wrong = Tensor::zeros(&ctx, &[4, 5]).expect("x");
    assert!(bn.shard_moments(&wrong).is_err());
    let two = ShardMoments {
        count: 8,
        mean: vec![0.0; 2],
        m2: vec![0.0; 2],
    };
    assert!(ShardMoments::merge(&[m.clone(), two]).is_err());
    assert!(
        bn.shard_grad_sums(&x).is_err(),
        "gradient sums need a forward_with_moments"
    );
    bn.forward_with_moments(&x, &m).expect("forward");
    assert!(
        matches!(bn.backward(&x), Err(Error::WrongBackward(_))),
        "a sharded forward needs backward_with_sums"
    );
    let sums = bn.shard_grad_sums(&x).expect("sums");
    assert!(ShardGradSums::merge(&[]).is_err());
    let wrong = ShardGradSums {
        count: 4,
        sum_dy: vec![0.0; 2],
        sum_dy_xhat: vec![0.0; 2],
    };
    assert!(ShardGradSums::merge(&[sums.clone(), wrong.clone()]).is_err());
    assert!(bn.backward_with_sums(&x, &wrong).is_err(), "channel count");
    let too_few = ShardGradSums {
        count: 1,
        ..sums.clone()
    };
    assert!(bn.backward_with_sums(&x, &too_few).is_err(), "count");
    assert!(
        bn.backward_with_sums(&Tensor::zeros(&ctx, &[2, 3]).expect("dy"), &sums)
            .is_err(),
        "shape"
    );
    // The local sums must come from the same grad_output.
    let other = Tensor::from_slice(&ctx, &[2.0; 12], &[4, 3]).expect("dy");
    assert!(matches!(
        bn.backward_with_sums(&other, &sums),
        Err(Error::WrongBackward(_))
    ));
    bn.backward_with_sums(&x, &sums).expect("backward");
    // An empty shard contributes nothing: zero local parameter gradients.
    let mut idle = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    let empty = Tensor::zeros(&ctx, &[0, 3]).expect("empty");
    idle.forward_with_moments(&empty, &m)
        .expect("empty forward");
    assert_eq!(idle.num_batches_tracked(), 1);
    let none = idle.shard_grad_sums(&empty).expect("empty sums");
    assert_eq!(none.count, 0);
    assert_eq!(none.sum_dy, vec![0.0; 3]);
    let g = idle
        .backward_with_sums(&empty, &sums)
        .expect("empty backward");
    let gb = g.grad_bias.expect("affine").to_vec().expect("read");
    assert_eq!(gb, vec![0.0; 3]);
    bn.eval();
    assert!(
        bn.forward_with_moments(&x, &m).is_err(),
        "eval uses running statistics"
    );
}

/// #12 (review): an input in an application buffer that ends right after
/// it (15 values in 60 bytes: the kernels read whole vec4s through a
/// padded copy) gives the sharded forward and backward the same results as
/// an ordinary tensor; backward reads the copy the forward made, not the
/// raw buffer's last partial vec4.
#[test]
fn shard_path_pads_an_unpadded_app_buffer() {
    let Some(ctx) = common::context() else { return };
    let x: Vec<f32> = (0..15).map(|i| (i * i % 7) as f32 - 2.5).collect();
    let dy: Vec<f32> = (0..15)
        .map(|i| ((i * 5) % 11) as f32 * 0.25 - 1.0)
        .collect();
    let app = |data: &[f32]| {
        let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("test/unpadded"),
            size: 60,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue()
            .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
        Tensor::from_buffer(&ctx, buffer, 0, &[3, 5]).expect("wrap")
    };
    let (ax, ady) = (app(&x), app(&dy));
    let (px, pdy) = (
        Tensor::from_slice(&ctx, &x, &[3, 5]).expect("x"),
        Tensor::from_slice(&ctx, &dy, &[3, 5]).expect("dy"),
    );
    let mut plain = BatchNorm1d::new(&ctx, BatchNormConfig::new(5)).expect("bn");
    let want_y = plain.forward(&px).expect("forward").to_vec().expect("y");
    let want = plain.backward(&pdy).expect("backward");
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(5)).expect("bn");
    let m = bn.shard_moments(&ax).expect("moments");
    let y = bn
        .forward_with_moments(&ax, &m)
        .expect("forward")
        .to_vec()
        .expect("y");
    let sums = bn.shard_grad_sums(&ady).expect("sums");
    let got = bn.backward_with_sums(&ady, &sums).expect("backward");
    common::check_close("output", &y, &common::f64s(&want_y), 1e-6).expect("y");
    for (name, a, b) in [
        ("grad_input", Some(&got.grad_input), Some(&want.grad_input)),
        (
            "grad_weight",
            got.grad_weight.as_ref(),
            want.grad_weight.as_ref(),
        ),
        ("grad_bias", got.grad_bias.as_ref(), want.grad_bias.as_ref()),
    ] {
        let (a, b) = (a.expect(name), b.expect(name));
        let want = common::f64s(&b.to_vec().expect("want"));
        common::check_close(name, &a.to_vec().expect("got"), &want, 1e-5).expect(name);
    }
}

/// Empty inputs, no rows or no channels (`[3, 0]`: `N * L` values per
/// channel, none in all), go through the shard protocol as through a plain
/// forward and backward, in every configuration: the same outputs,
/// gradients, running statistics and batch count. `shard_moments` counts
/// `N * L` values per channel, as `shard_grad_sums` does; with no channels
/// there are no running statistics to check against.
#[test]
fn empty_inputs_go_through_the_shard_protocol_as_through_forward() {
    let Some(ctx) = common::context() else { return };
    let shapes: [&[usize]; 5] = [&[3, 0], &[2, 0, 5], &[0, 2], &[0, 2, 3], &[0, 0]];
    for (affine, track) in [(true, true), (true, false), (false, true), (false, false)] {
        for shape in shapes {
            let cfg = BatchNormConfig::new(2)
                .affine(affine)
                .track_running_stats(track)
                .momentum(None);
            let mut plain = BatchNorm1d::new(&ctx, cfg.clone()).expect("plain");
            let mut shard = BatchNorm1d::new(&ctx, cfg).expect("shard");
            let x = Tensor::from_slice(&ctx, &[], shape).expect("x");
            let what = format!("{shape:?} affine {affine} track {track}");
            let want = plain.forward(&x).expect(&what);
            let moments = shard.shard_moments(&x).expect(&what);
            assert_eq!(
                moments.count,
                (shape[0] * shape[2..].iter().product::<usize>()) as u64
            );
            let merged = ShardMoments::merge(&[moments]).expect(&what);
            let got = shard.forward_with_moments(&x, &merged).expect(&what);
            assert_eq!(got.shape(), want.shape(), "{what}");
            assert_eq!(
                shard.num_batches_tracked(),
                plain.num_batches_tracked(),
                "{what}"
            );
            assert_eq!(
                shard.running_mean().expect("m"),
                plain.running_mean().expect("m")
            );
            assert_eq!(
                shard.running_var().expect("v"),
                plain.running_var().expect("v")
            );
            let dy = Tensor::from_slice(&ctx, &[], shape).expect("dy");
            let want = plain.backward(&dy).expect(&what);
            let sums = shard.shard_grad_sums(&dy).expect(&what);
            let merged = ShardGradSums::merge(&[sums]).expect(&what);
            let got = shard.backward_with_sums(&dy, &merged).expect(&what);
            assert_eq!(got.grad_input.shape(), want.grad_input.shape(), "{what}");
            let read = |t: Option<Tensor>| t.map(|t| t.to_vec().expect("read"));
            assert_eq!(read(got.grad_weight), read(want.grad_weight), "{what}");
            assert_eq!(read(got.grad_bias), read(want.grad_bias), "{what}");
        }
    }
}

/// An infinite input makes its channel's mean infinite through the shard
/// protocol as through a plain forward (the merged mean's low part was
/// `inf - inf`: a NaN running mean where PyTorch's is inf), and NaN
/// poisons only its channel.
#[test]
fn infinite_inputs_go_through_the_shard_protocol_as_through_forward() {
    let Some(ctx) = common::context() else { return };
    let mut x = common::Rng(9).normals(24, 1.0, 2.0);
    x[0] = f32::INFINITY; // channel 0 of (8, 3)
    x[4] = f32::NAN; // channel 1
    let t = Tensor::from_slice(&ctx, &x, &[8, 3]).expect("x");
    let mut plain = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("plain");
    let mut shard = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("shard");
    let want = plain.forward(&t).expect("forward").to_vec().expect("read");
    let m = shard.shard_moments(&t).expect("moments");
    let merged = ShardMoments::merge(&[m]).expect("merge");
    let got = shard.forward_with_moments(&t, &merged).expect("forward");
    let got = got.to_vec().expect("read");
    let same = |a: &[f32], b: &[f32]| {
        a.iter().zip(b).all(|(p, q)| {
            p == q || (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-5 * q.abs().max(1.0)
        })
    };
    assert!(same(&got, &want), "{got:?} vs {want:?}");
    for (a, b) in [
        (shard.running_mean(), plain.running_mean()),
        (shard.running_var(), plain.running_var()),
    ] {
        let (a, b) = (a.expect("a").expect("a"), b.expect("b").expect("b"));
        assert!(same(&a, &b), "{a:?} vs {b:?}");
    }
    let rm = plain.running_mean().expect("rm").expect("rm");
    assert!(
        rm[0].is_infinite() && rm[1].is_nan() && rm[2].is_finite(),
        "{rm:?}"
    );
}

/// Shards merged in either order keep an infinite mean infinite (Chan's
/// step made `inf - inf` once a finite shard followed the infinite one),
/// as one module on the whole batch does.
#[test]
fn merged_shards_keep_an_infinite_mean() {
    let Some(ctx) = common::context() else { return };
    let t = |v: &[f32]| Tensor::from_slice(&ctx, v, &[v.len(), 1]).expect("x");
    let mut whole = BatchNorm1d::new(&ctx, BatchNormConfig::new(1)).expect("bn");
    whole
        .forward(&t(&[f32::INFINITY, 1.0, 2.0, 3.0]))
        .expect("forward");
    let want = whole.running_mean().expect("rm");
    assert_eq!(want, Some(vec![f32::INFINITY]));
    let mut probe = BatchNorm1d::new(&ctx, BatchNormConfig::new(1)).expect("bn");
    let a = probe.shard_moments(&t(&[f32::INFINITY, 1.0])).expect("a");
    let b = probe.shard_moments(&t(&[2.0, 3.0])).expect("b");
    for shards in [[a.clone(), b.clone()], [b, a]] {
        let merged = ShardMoments::merge(&shards).expect("merge");
        assert_eq!(merged.mean, vec![f64::INFINITY], "{merged:?}");
        let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(1)).expect("bn");
        bn.forward_with_moments(&t(&[f32::INFINITY, 1.0]), &merged)
            .expect("forward");
        assert_eq!(bn.running_mean().expect("rm"), want);
    }
}
