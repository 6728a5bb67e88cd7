//! SyncBatchNorm between three in-process replicas (threads), each on its
//! own GpuContext: the same scenario the MPI test runs across processes.

mod common;

use wgpu_batchnorm::{
    BatchNorm1d, BatchNormConfig, Collective, Error, GpuContext, LocalCollective, LocalGroup,
    SyncBatchNorm, Tensor,
};

#[path = "common/sync_scenario.rs"]
mod scenario;

/// `body` on each of `n` in-process replicas (threads of one
/// `LocalGroup`), the results in rank order.
fn on_replicas<T: Send>(n: usize, body: impl Fn(LocalCollective) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::new(n)
            .into_iter()
            .map(|comm| s.spawn(|| body(comm)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("replica thread"))
            .collect()
    })
}

#[test]
fn sync_batch_norm_matches_one_module_across_three_threads() {
    let Some(_) = common::context() else { return };
    let results: Vec<Result<(), String>> = on_replicas(3, |comm| {
        let ctx = GpuContext::with_options(common::options()).map_err(|e| e.to_string())?;
        scenario::run(&ctx, comm)
    });
    for r in results {
        r.expect("replica");
    }
}

#[test]
fn local_collectives_gather_and_reduce_in_rank_order() {
    let results: Vec<(Vec<f64>, Vec<f64>)> = on_replicas(3, |comm| {
        let r = comm.rank() as f64;
        let gathered = comm.all_gather(&[r, 10.0 * r]).expect("gather");
        let mut sum = [r, 1.0];
        comm.all_reduce_sum(&mut sum).expect("reduce");
        (gathered, sum.to_vec())
    });
    for (gathered, sum) in results {
        assert_eq!(gathered, vec![0.0, 0.0, 1.0, 10.0, 2.0, 20.0]);
        assert_eq!(sum, vec![3.0, 3.0]);
    }
}

/// A replica that leaves (drops its end) makes the others' collectives
/// errors instead of blocking them forever.
#[test]
fn a_replica_leaving_is_an_error_not_a_hang() {
    let mut group = LocalGroup::new(2);
    let gone = group.pop().expect("two");
    let stays = group.pop().expect("two");
    drop(gone);
    assert!(matches!(
        stays.all_gather(&[1.0]),
        Err(Error::Collective(_))
    ));
    // Mismatched lengths are an error for every replica too.
    let results: Vec<bool> = on_replicas(2, |comm| {
        let len = 1 + comm.rank();
        comm.all_gather(&vec![0.0; len]).is_err()
    });
    assert_eq!(results, vec![true, true]);
    // Different collectives at the same step, even of one length: an
    // error for both, never one's data in the other's result.
    let results: Vec<bool> = on_replicas(2, |comm| {
        if comm.rank() == 0 {
            comm.all_gather(&[1.0, 2.0]).is_err()
        } else {
            comm.all_reduce_sum(&mut [1.0, 2.0]).is_err()
        }
    });
    assert_eq!(results, vec![true, true]);
}

/// In eval with running statistics nothing is exchanged: a single replica
/// group works as a plain module.
#[test]
fn eval_is_local() {
    let Some(ctx) = common::context() else { return };
    let comm = LocalGroup::new(1).pop().expect("one");
    let mut sync = SyncBatchNorm::new(
        BatchNorm1d::new(&ctx, BatchNormConfig::new(2)).expect("bn"),
        comm,
    );
    sync.module_mut().eval();
    let x = Tensor::from_slice(&ctx, &[1.0, 2.0], &[1, 2]).expect("x");
    let y = sync.forward(&x).expect("eval").to_vec().expect("read");
    assert!((y[0] - 1.0 / (1.0f32 + 1e-5).sqrt()).abs() < 1e-6);
    assert_eq!(sync.world_size(), 1);
}

/// Without per-channel parameters or running statistics, the input's
/// channels need not be `num_features`, as for the plain module and
/// PyTorch's SyncBatchNorm: the replicas agree on them in one more
/// all-gather and match one module on the whole batch. A replica with
/// other channels, or a rejected input, fails every replica, and the last
/// synced forward's backward still pairs up.
#[test]
fn channel_free_modules_take_any_channel_count_the_replicas_agree_on() {
    let Some(_) = common::context() else { return };
    let cfg = BatchNormConfig::new(2)
        .affine(false)
        .track_running_stats(false);
    let (c, rows) = (5, [3usize, 4]);
    let n: usize = rows.iter().sum();
    let x = common::Rng(3).normals(n * c, 0.5, 2.0);
    let dy = common::Rng(4).normals(n * c, 0.0, 1.0);
    let results = on_replicas(2, |comm| -> Result<(), String> {
        let rank = comm.rank();
        let e = |e: Error| e.to_string();
        let ctx = GpuContext::with_options(common::options()).map_err(e)?;
        let t = |v: &[f32], shape: &[usize]| Tensor::from_slice(&ctx, v, shape).map_err(e);
        let mut single = BatchNorm1d::new(&ctx, cfg.clone()).map_err(e)?;
        let module = BatchNorm1d::new(&ctx, cfg.clone()).map_err(e)?;
        let mut sync = SyncBatchNorm::new(module, comm);
        let (start, len) = (rows[..rank].iter().sum::<usize>() * c, rows[rank] * c);
        let local = |v: &[f32]| v[start..start + len].to_vec();
        let want_y = local(
            &single
                .forward(&t(&x, &[n, c])?)
                .map_err(e)?
                .to_vec()
                .map_err(e)?,
        );
        let got_y = sync.forward(&t(&local(&x), &[rows[rank], c])?).map_err(e)?;
        common::check_close(
            "output",
            &got_y.to_vec().map_err(e)?,
            &common::f64s(&want_y),
            1e-5,
        )?;
        let want_dx = single.backward(&t(&dy, &[n, c])?).map_err(e)?.grad_input;
        let want_dx = common::f64s(&local(&want_dx.to_vec().map_err(e)?));
        let dy_local = t(&local(&dy), &[rows[rank], c])?;
        let g = sync.backward(&dy_local).map_err(e)?;
        common::check_close(
            "grad_input",
            &g.grad_input.to_vec().map_err(e)?,
            &want_dx,
            1e-5,
        )?;
        // Other channels on rank 1, then a 1-D input on rank 0.
        let other = c + rank;
        if sync
            .forward(&t(&vec![1.0; 2 * other], &[2, other])?)
            .is_ok()
        {
            return Err(format!("rank {rank}: replicas of other channels ran"));
        }
        let bad = if rank == 0 {
            t(&[1.0; 5], &[5])?
        } else {
            t(&local(&x), &[rows[1], c])?
        };
        if sync.forward(&bad).is_ok() {
            return Err(format!(
                "rank {rank}: a forward beside a rejected input ran"
            ));
        }
        let g = sync.backward(&dy_local).map_err(e)?;
        common::check_close(
            "grad_input again",
            &g.grad_input.to_vec().map_err(e)?,
            &want_dx,
            1e-5,
        )
    });
    for r in results {
        r.expect("replica");
    }
}
