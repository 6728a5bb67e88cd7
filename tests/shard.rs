//! Statistics across devices (SyncBatchNorm): two contexts split a batch
//! unevenly; forward outputs, running statistics and backward gradients
//! must match one device on the whole batch.

mod common;

use wgpu_batchnorm::{
    BatchNorm1d, BatchNorm1dConfig, GpuContext, ShardGradSums, ShardMoments, Tensor,
};

fn split_rows(x: &[f32], shape: &[usize], rows: usize) -> (Vec<f32>, Vec<f32>) {
    let row: usize = shape[1..].iter().product();
    (x[..rows * row].to_vec(), x[rows * row..].to_vec())
}

fn shard_matches_single_device(shape: &[usize], split: usize, offset: f64) {
    let Some(ctx_a) = common::context() else {
        return;
    };
    let ctx_b = GpuContext::new().expect("second device");
    let c = shape[1];
    let mut single = BatchNorm1d::new(&ctx_a, BatchNorm1dConfig::new(c)).expect("bn");
    let mut dev_a = BatchNorm1d::new(&ctx_a, BatchNorm1dConfig::new(c)).expect("bn");
    let mut dev_b = BatchNorm1d::new(&ctx_b, BatchNorm1dConfig::new(c)).expect("bn");
    let mut rng = common::Rng(31);
    let w = rng.normals(c, 1.0, 0.3);
    for bn in [&mut single, &mut dev_a, &mut dev_b] {
        bn.set_weight(&w).expect("w");
    }
    let numel: usize = shape.iter().product();
    let shape_a: Vec<usize> = std::iter::once(split)
        .chain(shape[1..].iter().copied())
        .collect();
    let shape_b: Vec<usize> = std::iter::once(shape[0] - split)
        .chain(shape[1..].iter().copied())
        .collect();
    for _ in 0..3 {
        let x = rng.normals(numel, offset, 2.0);
        let want = single
            .forward(&Tensor::from_slice(&ctx_a, &x, shape).expect("x"))
            .expect("single")
            .to_vec()
            .expect("read");
        let (xa, xb) = split_rows(&x, shape, split);
        let ta = Tensor::from_slice(&ctx_a, &xa, &shape_a).expect("xa");
        let tb = Tensor::from_slice(&ctx_b, &xb, &shape_b).expect("xb");
        let ma = dev_a.shard_moments(&ta).expect("moments a");
        let mb = dev_b.shard_moments(&tb).expect("moments b");
        let global = ShardMoments::merge(&[ma, mb]).expect("merge");
        assert_eq!(global.count as usize, numel / c);
        let mut got = dev_a
            .forward_with_moments(&ta, &global)
            .expect("a")
            .to_vec()
            .expect("read");
        got.extend(
            dev_b
                .forward_with_moments(&tb, &global)
                .expect("b")
                .to_vec()
                .expect("read"),
        );
        let want64: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
        common::check_close("sharded output", &got, &want64, 1e-4).expect("output");
        // Backward: shard sums, merged, then each shard's grad_input.
        let dy = rng.normals(numel, 0.3, 1.0);
        let single_grads = single
            .backward(&Tensor::from_slice(&ctx_a, &dy, shape).expect("dy"))
            .expect("single backward");
        let (dya, dyb) = split_rows(&dy, shape, split);
        let ta_dy = Tensor::from_slice(&ctx_a, &dya, &shape_a).expect("dya");
        let tb_dy = Tensor::from_slice(&ctx_b, &dyb, &shape_b).expect("dyb");
        let sa = dev_a.shard_grad_sums(&ta_dy).expect("sums a");
        let sb = dev_b.shard_grad_sums(&tb_dy).expect("sums b");
        let sums = ShardGradSums::merge(&[sa, sb]).expect("merge sums");
        assert_eq!(sums.count, global.count);
        let ga = dev_a.backward_with_sums(&ta_dy, &sums).expect("backward a");
        let gb = dev_b.backward_with_sums(&tb_dy, &sums).expect("backward b");
        let mut dx = ga.grad_input.to_vec().expect("dx a");
        dx.extend(gb.grad_input.to_vec().expect("dx b"));
        let f64s = |t: &Tensor| -> Vec<f64> {
            t.to_vec()
                .expect("read")
                .into_iter()
                .map(f64::from)
                .collect()
        };
        common::check_close(
            "sharded grad_input",
            &dx,
            &f64s(&single_grads.grad_input),
            1e-4,
        )
        .expect("grad_input");
        for g in [&ga, &gb] {
            for (name, got, want) in [
                ("grad_weight", &g.grad_weight, &single_grads.grad_weight),
                ("grad_bias", &g.grad_bias, &single_grads.grad_bias),
            ] {
                let got = got.as_ref().expect("affine").to_vec().expect("read");
                let want = f64s(want.as_ref().expect("affine"));
                common::check_close(name, &got, &want, 1e-4).expect(name);
            }
        }
        for bn in [&dev_a, &dev_b] {
            let f = |v: Option<Vec<f32>>| {
                v.expect("tracked")
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect::<Vec<_>>()
            };
            common::check_close(
                "running_mean",
                &bn.running_mean().expect("rm").expect("some"),
                &f(single.running_mean().expect("rm")),
                1e-5,
            )
            .expect("rm");
            common::check_close(
                "running_var",
                &bn.running_var().expect("rv").expect("some"),
                &f(single.running_var().expect("rv")),
                1e-5,
            )
            .expect("rv");
            assert_eq!(bn.num_batches_tracked(), single.num_batches_tracked());
        }
    }
}

#[test]
fn shard_uneven_2d_split_matches_one_device() {
    shard_matches_single_device(&[37, 6], 11, 0.5);
}

#[test]
fn shard_uneven_3d_split_matches_one_device() {
    shard_matches_single_device(&[9, 5, 12], 2, -3.0);
}

#[test]
fn shard_large_offset_stays_exact() {
    shard_matches_single_device(&[64, 4, 8], 40, 1e4);
}

#[test]
fn shard_one_value_per_device_is_fine_when_the_batch_has_more() {
    shard_matches_single_device(&[2, 3], 1, 0.0);
}

#[test]
fn shard_errors() {
    let Some(ctx) = common::context() else { return };
    assert!(ShardMoments::merge(&[]).is_err());
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3)).expect("bn");
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
        bn.backward(&x).is_err(),
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
    bn.backward_with_sums(&x, &sums).expect("backward");
    // An empty shard contributes nothing but still gets the global
    // parameter gradients.
    let mut idle = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3)).expect("bn");
    let empty = Tensor::zeros(&ctx, &[0, 3]).expect("empty");
    idle.forward_with_moments(&empty, &m)
        .expect("empty forward");
    let none = idle.shard_grad_sums(&empty).expect("empty sums");
    assert_eq!(none.count, 0);
    assert_eq!(none.sum_dy, vec![0.0; 3]);
    let g = idle
        .backward_with_sums(&empty, &sums)
        .expect("empty backward");
    let gb = g.grad_bias.expect("affine").to_vec().expect("read");
    common::check_close("empty shard grad_bias", &gb, &sums.sum_dy, 1e-6)
        .expect("global grad_bias");
    bn.eval();
    assert!(
        bn.forward_with_moments(&x, &m).is_err(),
        "eval uses running statistics"
    );
}
