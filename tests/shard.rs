//! Statistics across devices (SyncBatchNorm): replicas on separate contexts
//! split a batch unevenly; forward outputs, running statistics and
//! backward gradients must match one device on the whole batch, with
//! PyTorch's conventions (every replica updates its running statistics,
//! parameter gradients are local and sum to the full-batch ones).

mod common;

use wgpu_batchnorm::{
    BatchNorm1d, BatchNormConfig, ContextOptions, GpuContext, ShardGradSums, ShardMoments, Tensor,
};

/// Rows `[a, b)` of a row-major tensor of `shape`.
fn rows(x: &[f32], shape: &[usize], a: usize, b: usize) -> Vec<f32> {
    let row: usize = shape[1..].iter().product();
    x[a * row..b * row].to_vec()
}

fn with_rows(shape: &[usize], n: usize) -> Vec<usize> {
    std::iter::once(n)
        .chain(shape[1..].iter().copied())
        .collect()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    common::f64s(&t.to_vec().expect("read"))
}

/// Replicas with `splits[i]` rows each (zeros allowed) against one module
/// on the whole batch, for three training steps.
fn shards_match_single_device(shape: &[usize], splits: &[usize], offset: f64) {
    shards_match_with(common::options(), shape, splits, offset);
}

/// The same with every context made from `options`.
fn shards_match_with(options: ContextOptions, shape: &[usize], splits: &[usize], offset: f64) {
    let Some(_) = common::context() else { return };
    let ctx = GpuContext::with_options(options.clone()).expect("context");
    assert_eq!(splits.iter().sum::<usize>(), shape[0]);
    let c = shape[1];
    let contexts: Vec<GpuContext> = splits
        .iter()
        .map(|_| GpuContext::with_options(options.clone()).expect("replica context"))
        .collect();
    let mut single = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
    let mut replicas: Vec<BatchNorm1d> = contexts
        .iter()
        .map(|cx| BatchNorm1d::new(cx, BatchNormConfig::new(c)).expect("bn"))
        .collect();
    let mut rng = common::Rng(31);
    let w = rng.normals(c, 1.0, 0.3);
    single.set_weight(&w).expect("w");
    for r in &mut replicas {
        r.set_weight(&w).expect("w");
    }
    let numel: usize = shape.iter().product();
    let bounds: Vec<(usize, usize)> = splits
        .iter()
        .scan(0, |at, &n| {
            *at += n;
            Some((*at - n, *at))
        })
        .collect();
    for step in 0..3 {
        let x = rng.normals(numel, offset, 2.0);
        let want = single
            .forward(&Tensor::from_slice(&ctx, &x, shape).expect("x"))
            .expect("single")
            .to_vec()
            .expect("read");
        let xs: Vec<Tensor> = bounds
            .iter()
            .zip(&contexts)
            .map(|(&(a, b), cx)| {
                Tensor::from_slice(cx, &rows(&x, shape, a, b), &with_rows(shape, b - a))
                    .expect("shard")
            })
            .collect();
        let moments: Vec<ShardMoments> = replicas
            .iter_mut()
            .zip(&xs)
            .map(|(r, x)| r.shard_moments(x).expect("moments"))
            .collect();
        let global = ShardMoments::merge(&moments).expect("merge");
        assert_eq!(global.count as usize, numel / c);
        let mut got = Vec::new();
        for (r, x) in replicas.iter_mut().zip(&xs) {
            got.extend(
                r.forward_with_moments(x, &global)
                    .expect("fwd")
                    .to_vec()
                    .expect("read"),
            );
        }
        common::check_close(
            &format!("step {step} output"),
            &got,
            &common::f64s(&want),
            1e-4,
        )
        .expect("output");
        // Backward: local sums, merged, then each shard's grad_input.
        let dy = rng.normals(numel, 0.3, 1.0);
        let single_grads = single
            .backward(&Tensor::from_slice(&ctx, &dy, shape).expect("dy"))
            .expect("single backward");
        let dys: Vec<Tensor> = bounds
            .iter()
            .zip(&contexts)
            .map(|(&(a, b), cx)| {
                Tensor::from_slice(cx, &rows(&dy, shape, a, b), &with_rows(shape, b - a))
                    .expect("dy shard")
            })
            .collect();
        let sums: Vec<ShardGradSums> = replicas
            .iter_mut()
            .zip(&dys)
            .map(|(r, dy)| r.shard_grad_sums(dy).expect("sums"))
            .collect();
        let merged = ShardGradSums::merge(&sums).expect("merge sums");
        assert_eq!(merged.count, global.count);
        let mut dx = Vec::new();
        let (mut gw, mut gb) = (vec![0.0f64; c], vec![0.0f64; c]);
        for ((r, dy), local) in replicas.iter_mut().zip(&dys).zip(&sums) {
            let g = r.backward_with_sums(dy, &merged).expect("backward");
            dx.extend(g.grad_input.to_vec().expect("dx"));
            let (w, b) = (g.grad_weight.expect("affine"), g.grad_bias.expect("affine"));
            // Parameter gradients are this replica's local sums...
            common::check_close(
                "local grad_bias",
                &b.to_vec().expect("read"),
                &local.sum_dy,
                1e-5,
            )
            .expect("local");
            // ...and add up to the full batch's.
            gw.iter_mut().zip(f64s(&w)).for_each(|(a, v)| *a += v);
            gb.iter_mut().zip(f64s(&b)).for_each(|(a, v)| *a += v);
        }
        common::check_close("grad_input", &dx, &f64s(&single_grads.grad_input), 1e-4)
            .expect("grad_input");
        let sum = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let want_gw = f64s(single_grads.grad_weight.as_ref().expect("affine"));
        let want_gb = f64s(single_grads.grad_bias.as_ref().expect("affine"));
        common::check_close("summed grad_weight", &sum(&gw), &want_gw, 1e-4).expect("gw");
        common::check_close("summed grad_bias", &sum(&gb), &want_gb, 1e-4).expect("gb");
        for r in &replicas {
            let f = |v: Option<Vec<f32>>| common::f64s(&v.expect("tracked"));
            let rm = r.running_mean().expect("rm").expect("some");
            let rv = r.running_var().expect("rv").expect("some");
            common::check_close(
                "running_mean",
                &rm,
                &f(single.running_mean().expect("rm")),
                1e-5,
            )
            .expect("rm");
            common::check_close(
                "running_var",
                &rv,
                &f(single.running_var().expect("rv")),
                1e-5,
            )
            .expect("rv");
            assert_eq!(r.num_batches_tracked(), single.num_batches_tracked());
        }
    }
}

#[test]
fn shard_uneven_2d_split_matches_one_device() {
    shards_match_single_device(&[37, 5], &[11, 26], 0.5);
}

#[test]
fn shard_uneven_3d_split_matches_one_device() {
    shards_match_single_device(&[9, 4, 13], &[2, 7], -1.0);
}

#[test]
fn shard_large_offset_stays_exact() {
    shards_match_single_device(&[64, 3, 8], &[40, 24], 1e4);
}

/// #16: odd C in 17 to 256 rows of many channels, which CPU adapters
/// reduce in four-channel column lanes on one device and through the
/// split reductions for a shard's gradient sums.
#[test]
fn shard_odd_wide_rows_match_one_device() {
    shards_match_single_device(&[34, 4099], &[17, 17], 1.0);
    shards_match_single_device(&[60, 2051], &[20, 40], -2.0);
}

/// #16: odd C in shards of 9 to 16 rows past 2^16 values, with per-thread
/// partials and the column kernels forced on (whatever the host's
/// cores): the shards' training forward in four-channel lanes, their
/// gradient sums one channel per thread (`grads_columns`), and the whole
/// batch in four-channel lanes on one device.
#[test]
fn shard_odd_wide_few_rows_match_one_device() {
    let mut forced = common::options();
    forced.tuning.thread_partials = Some(true);
    forced.tuning.columns = Some(true);
    shards_match_with(forced.clone(), &[32, 4099], &[16, 16], 1.0);
    shards_match_with(forced, &[18, 7285], &[9, 9], -1.0);
}

#[test]
fn shard_one_value_per_device_is_fine_when_the_batch_has_more() {
    shards_match_single_device(&[3, 6], &[1, 2], 2.0);
}

/// Regression (#12.3): a replica with an empty shard updates its running
/// statistics and num_batches_tracked like the others.
#[test]
fn shard_empty_replica_keeps_running_statistics_in_step() {
    shards_match_single_device(&[12, 2], &[12, 0], 0.3);
    shards_match_single_device(&[10, 3, 4], &[0, 6, 4], -0.7);
}
