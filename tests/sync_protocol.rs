//! SyncBatchNorm's protocol between two in-process replicas: exactly one
//! all-gather per training forward and one all-reduce per backward, none
//! in eval; a failure on one replica is an error on every replica (never a
//! replica left waiting); configurations other than the default match one
//! module fed the whole batch.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use wgpu_batchnorm::{
    BatchNorm1d, BatchNormConfig, Collective, Error, GpuContext, LocalCollective, LocalGroup,
    Result, SyncBatchNorm, Tensor,
};

/// A replica's end of a [`LocalGroup`] that counts its collectives.
struct Counting {
    inner: LocalCollective,
    gathers: Arc<AtomicUsize>,
    reduces: Arc<AtomicUsize>,
}

impl Counting {
    /// (all-gathers, all-reduces) so far.
    fn counts(g: &Arc<AtomicUsize>, r: &Arc<AtomicUsize>) -> (usize, usize) {
        (g.load(Ordering::SeqCst), r.load(Ordering::SeqCst))
    }
}

impl Collective for Counting {
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn all_gather(&self, send: &[f64]) -> Result<Vec<f64>> {
        self.gathers.fetch_add(1, Ordering::SeqCst);
        self.inner.all_gather(send)
    }
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        self.reduces.fetch_add(1, Ordering::SeqCst);
        self.inner.all_reduce_sum(values)
    }
}

type Counters = (Arc<AtomicUsize>, Arc<AtomicUsize>);

/// Runs `body` on two replicas (threads, a context each) and returns their
/// results in rank order; `None` without an adapter (outside CI).
fn pair<T: Send>(body: impl Fn(&GpuContext, Counting, Counters) -> T + Sync) -> Option<Vec<T>> {
    common::context()?;
    let body = &body;
    Some(std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::new(2)
            .into_iter()
            .map(|inner| {
                s.spawn(move || {
                    let ctx = GpuContext::with_options(common::options()).expect("context");
                    let (g, r) = (Arc::default(), Arc::default());
                    let comm = Counting {
                        inner,
                        gathers: Arc::clone(&g),
                        reduces: Arc::clone(&r),
                    };
                    body(&ctx, comm, (g, r))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("replica"))
            .collect()
    }))
}

fn values(seed: u64, n: usize) -> Vec<f32> {
    common::Rng(seed).normals(n, 0.5, 2.0)
}

#[test]
fn one_gather_per_forward_one_reduce_per_backward_none_in_eval() {
    let Some(out) = pair(|ctx, comm, (g, r)| {
        let rank = comm.rank() as u64;
        let bn = BatchNorm1d::new(ctx, BatchNormConfig::new(3)).expect("bn");
        let mut sync = SyncBatchNorm::new(bn, comm);
        let x = Tensor::from_slice(ctx, &values(rank, 12), &[4, 3]).expect("x");
        let mut seen = Vec::new();
        sync.forward(&x).expect("forward");
        seen.push(Counting::counts(&g, &r));
        sync.backward(&x).expect("backward");
        seen.push(Counting::counts(&g, &r));
        sync.module_mut().eval();
        sync.forward(&x).expect("eval forward");
        sync.backward(&x).expect("eval backward");
        seen.push(Counting::counts(&g, &r));
        seen
    }) else {
        return;
    };
    for seen in out {
        assert_eq!(seen, [(1, 0), (1, 1), (1, 1)]);
    }
}

#[test]
fn a_rejected_grad_output_fails_every_replica_and_changes_nothing() {
    let Some(out) = pair(|ctx, comm, _| {
        let rank = comm.rank();
        let bn = BatchNorm1d::new(ctx, BatchNormConfig::new(3)).expect("bn");
        let mut sync = SyncBatchNorm::new(bn, comm);
        let x = Tensor::from_slice(ctx, &values(rank as u64, 12), &[4, 3]).expect("x");
        sync.forward(&x).expect("forward");
        let bad = Tensor::zeros(ctx, &[4, 2]).expect("bad");
        let first = sync.backward(if rank == 1 { &bad } else { &x });
        // The forward is still there to differentiate, on every replica.
        let second = sync
            .backward(&x)
            .map(|g| g.grad_input.to_vec().expect("read"));
        (first.map(|_| ()), second)
    }) else {
        return;
    };
    for (rank, (first, second)) in out.into_iter().enumerate() {
        let err = first.expect_err("every replica fails");
        if rank == 0 {
            assert!(matches!(err, Error::Collective(_)), "{err}");
        }
        let g = second.expect("the retry works");
        assert!(g.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_failed_forward_fails_every_replica_and_its_backward_never_hangs() {
    let Some(out) = pair(|ctx, comm, _| {
        let rank = comm.rank();
        let bn = BatchNorm1d::new(ctx, BatchNormConfig::new(3)).expect("bn");
        let mut sync = SyncBatchNorm::new(bn, comm);
        let x = Tensor::from_slice(ctx, &values(rank as u64, 12), &[4, 3]).expect("x");
        let bad = Tensor::zeros(ctx, &[4, 5]).expect("bad");
        let forward = sync.forward(if rank == 1 { &bad } else { &x }).map(|_| ());
        let untouched = sync.module().num_batches_tracked() == 0
            && sync.module().running_mean().expect("read") == Some(vec![0.0; 3]);
        // Nothing to differentiate: an error everywhere, not a wait.
        let backward = sync.backward(&x).map(|_| ());
        // The group still works.
        sync.forward(&x).expect("forward");
        sync.backward(&x).expect("backward");
        (forward, untouched, backward)
    }) else {
        return;
    };
    for (forward, untouched, backward) in out {
        assert!(forward.is_err());
        assert!(untouched, "a rejected step changed the state");
        assert!(backward.is_err());
    }
}

/// One value per channel in the whole group (rank 0 one row, rank 1 none):
/// every replica sees it in the merged statistics and rejects the step
/// alike, so each keeps its previous forward, whose backward still works
/// (as a rejected plain forward keeps the module's).
#[test]
fn one_value_per_channel_in_the_group_keeps_the_previous_forward() {
    let Some(out) = pair(|ctx, comm, _| {
        let rank = comm.rank();
        let bn = BatchNorm1d::new(ctx, BatchNormConfig::new(3)).expect("bn");
        let mut sync = SyncBatchNorm::new(bn, comm);
        let x = Tensor::from_slice(ctx, &values(rank as u64, 12), &[4, 3]).expect("x");
        let dy = Tensor::from_slice(ctx, &values(9, 12), &[4, 3]).expect("dy");
        sync.forward(&x).expect("forward");
        let want = sync.backward(&dy).expect("backward").grad_input;
        let want = want.to_vec().expect("read");
        let state = sync.module().running_mean().expect("read");
        let rows = if rank == 0 { 1 } else { 0 };
        let single = Tensor::zeros(ctx, &[rows, 3]).expect("single");
        let rejected = sync.forward(&single).map(|_| ());
        let kept = sync.module().running_mean().expect("read") == state
            && sync.module().num_batches_tracked() == 1;
        let again = sync
            .backward(&dy)
            .map(|g| g.grad_input.to_vec().expect("read"));
        (rejected, kept, again, want)
    }) else {
        return;
    };
    for (rank, (rejected, kept, again, want)) in out.into_iter().enumerate() {
        let err = rejected.expect_err("one value per channel in training");
        assert!(
            matches!(err, Error::TooFewValues { .. }),
            "rank {rank}: {err}"
        );
        assert!(kept, "rank {rank}: a rejected step changed the state");
        assert_eq!(
            again.expect("the earlier forward's backward"),
            want,
            "rank {rank}"
        );
    }
}

/// A rejected eval forward (a 1-D input) keeps the synchronized training
/// forward before it, as a rejected call keeps the plain module's: both
/// replicas' backwards still meet in the all-reduce and match one module
/// fed the whole batch.
#[test]
fn a_rejected_eval_forward_keeps_the_synced_forward() {
    let whole: Vec<f32> = [values(0, 12), values(1, 12)].concat();
    let dys: Vec<f32> = [values(8, 12), values(9, 12)].concat();
    let Some(out) = pair(|ctx, comm, _| {
        let rank = comm.rank();
        let bn = BatchNorm1d::new(ctx, BatchNormConfig::new(3)).expect("bn");
        let mut sync = SyncBatchNorm::new(bn, comm);
        let rows = |v: &[f32]| v[rank * 12..rank * 12 + 12].to_vec();
        let x = Tensor::from_slice(ctx, &rows(&whole), &[4, 3]).expect("x");
        sync.forward(&x).expect("synced forward");
        sync.module_mut().eval();
        let bad = Tensor::from_slice(ctx, &[1.0, 2.0, 3.0], &[3]).expect("bad");
        let rejected = sync.forward(&bad).is_err();
        let dy = Tensor::from_slice(ctx, &rows(&dys), &[4, 3]).expect("dy");
        let g = sync
            .backward(&dy)
            .map(|g| g.grad_input.to_vec().expect("read"));
        (rejected, g)
    }) else {
        return;
    };
    let ctx = common::context().expect("context");
    let mut one = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    one.forward(&Tensor::from_slice(&ctx, &whole, &[8, 3]).expect("x"))
        .expect("forward");
    let dy = Tensor::from_slice(&ctx, &dys, &[8, 3]).expect("dy");
    let want = one
        .backward(&dy)
        .expect("backward")
        .grad_input
        .to_vec()
        .expect("read");
    for (rank, (rejected, g)) in out.into_iter().enumerate() {
        assert!(rejected, "rank {rank}: a 1-D input is rejected");
        let got = g.expect("the synced forward's backward");
        let want = &want[rank * 12..rank * 12 + 12];
        common::check_close(&format!("rank {rank} dx"), &got, &common::f64s(want), 1e-4)
            .expect("dx");
    }
}

/// A forward that fails on one replica only, after the all-gather (here:
/// `keep_input_copy` on an input buffer without `COPY_SRC`, which only the
/// copy needs): that replica changes nothing, the other commits; the next
/// backward fails on both instead of leaving one waiting.
#[test]
fn a_forward_failing_after_the_gather_fails_both_backwards() {
    let Some(out) = pair(|ctx, comm, _| {
        let rank = comm.rank();
        let bn = BatchNorm1d::new(ctx, BatchNormConfig::new(3)).expect("bn");
        let mut sync = SyncBatchNorm::new(bn, comm);
        let data = values(rank as u64, 12);
        let x = if rank == 1 {
            sync.module_mut().keep_input_copy(true);
            let buffer = ctx
                .device()
                .create_buffer(&wgpu_batchnorm::wgpu::BufferDescriptor {
                    label: Some("test/no-copy-src"),
                    size: 48,
                    usage: wgpu_batchnorm::wgpu::BufferUsages::STORAGE
                        | wgpu_batchnorm::wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
            ctx.queue()
                .write_buffer(&buffer, 0, bytemuck::cast_slice(&data));
            Tensor::from_buffer(ctx, buffer, 0, &[4, 3]).expect("wrap")
        } else {
            Tensor::from_slice(ctx, &data, &[4, 3]).expect("x")
        };
        let forward = sync.forward(&x).map(|_| ());
        let nbt = sync.module().num_batches_tracked();
        let dy = Tensor::from_slice(ctx, &values(7, 12), &[4, 3]).expect("dy");
        let backward = sync.backward(&dy).map(|_| ());
        // Both took part in the same collectives: the group still works.
        let good = Tensor::from_slice(ctx, &data, &[4, 3]).expect("x");
        sync.forward(&good).expect("next forward");
        sync.backward(&dy).expect("next backward");
        (forward, nbt, backward)
    }) else {
        return;
    };
    let (f0, n0, b0) = &out[0];
    let (f1, n1, b1) = &out[1];
    assert!(f0.is_ok(), "rank 0's forward: {f0:?}");
    assert!(f1.is_err(), "rank 1's forward must fail");
    assert_eq!((*n0, *n1), (1, 0), "rank 1 changed nothing");
    assert!(b0.is_err() && b1.is_err(), "backward: {b0:?} / {b1:?}");
}

/// Cumulative averaging, no running statistics and no affine parameters
/// through SyncBatchNorm: each replica matches one module on the whole
/// batch (outputs, grad_input, summed parameter gradients, state).
#[test]
fn other_configurations_match_one_module() {
    let configs = [
        BatchNormConfig::new(3).momentum(None),
        BatchNormConfig::new(3).track_running_stats(false),
        BatchNormConfig::new(3).affine(false),
    ];
    let (n, rows) = (7, [3usize, 4]);
    let Some(out) = pair(|ctx, comm, _| -> std::result::Result<(), String> {
        let rank = comm.rank();
        let e = |e: Error| e.to_string();
        let mut comm = Some(comm);
        for cfg in &configs {
            let at = |w: &str| format!("rank {rank} {cfg:?}: {w}");
            let mut single = BatchNorm1d::new(ctx, cfg.clone()).map_err(e)?;
            let module = BatchNorm1d::new(ctx, cfg.clone()).map_err(e)?;
            let mut sync = SyncBatchNorm::new(module, comm.take().ok_or("comm")?);
            let (start, len) = (rows[..rank].iter().sum::<usize>() * 3, rows[rank] * 3);
            let local = |v: &[f32]| v[start..start + len].to_vec();
            for step in 0..3 {
                let (x, dy) = (values(10 + step, n * 3), values(20 + step, n * 3));
                let t = |v: &[f32], r: usize| Tensor::from_slice(ctx, v, &[r, 3]).map_err(e);
                let want = single.forward(&t(&x, n)?).map_err(e)?.to_vec().map_err(e)?;
                let got = sync.forward(&t(&local(&x), rows[rank])?).map_err(e)?;
                let got = got.to_vec().map_err(e)?;
                common::check_close(&at("output"), &got, &common::f64s(&local(&want)), 1e-5)?;
                let wg = single.backward(&t(&dy, n)?).map_err(e)?;
                let g = sync.backward(&t(&local(&dy), rows[rank])?).map_err(e)?;
                let want_dx = local(&wg.grad_input.to_vec().map_err(e)?);
                let got_dx = g.grad_input.to_vec().map_err(e)?;
                common::check_close(&at("grad_input"), &got_dx, &common::f64s(&want_dx), 1e-5)?;
                if cfg.affine != g.grad_weight.is_some() {
                    return Err(at("grad_weight presence"));
                }
                if let (Some(gw), Some(ww)) = (&g.grad_weight, &wg.grad_weight) {
                    let mut sum: Vec<f64> =
                        gw.to_vec().map_err(e)?.into_iter().map(f64::from).collect();
                    sync.collective().all_reduce_sum(&mut sum).map_err(e)?;
                    let sum: Vec<f32> = sum.into_iter().map(|v| v as f32).collect();
                    let want = common::f64s(&ww.to_vec().map_err(e)?);
                    common::check_close(&at("summed grad_weight"), &sum, &want, 1e-5)?;
                }
                let m = sync.module();
                if m.num_batches_tracked() != single.num_batches_tracked() {
                    return Err(at("num_batches_tracked"));
                }
                for (name, got, want) in [
                    ("running_mean", m.running_mean(), single.running_mean()),
                    ("running_var", m.running_var(), single.running_var()),
                ] {
                    let (got, want) = (got.map_err(e)?, want.map_err(e)?);
                    if got.is_some() != cfg.track_running_stats || want.is_some() != got.is_some() {
                        return Err(at(name));
                    }
                    let (got, want) = (got.unwrap_or_default(), want.unwrap_or_default());
                    common::check_close(&at(name), &got, &common::f64s(&want), 1e-5)?;
                }
            }
            comm = Some(sync.into_parts().1);
        }
        Ok(())
    }) else {
        return;
    };
    for r in out {
        r.expect("replica");
    }
}
