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
