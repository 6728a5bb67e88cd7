//! The SyncBatchNorm scenario every transport must pass: replicas hold
//! uneven slices of a fixed global batch (some empty), run training steps
//! with a backward each, a rejected step and an eval step; each replica
//! checks itself against one ordinary module fed the whole batch.

use wgpu_batchnorm::{BatchNorm2d, BatchNormConfig, Collective, GpuContext, SyncBatchNorm, Tensor};

/// Rows of the global batch each of three replicas holds, per step.
pub const SPLITS: [[usize; 3]; 6] = [
    [4, 5, 3],
    [0, 7, 5],
    [6, 0, 6],
    [2, 2, 8],
    [5, 4, 3],
    [12, 0, 0],
];
const N: usize = 12;
const C: usize = 3;
const SPATIAL: [usize; 2] = [2, 3];

fn shape(n: usize) -> Vec<usize> {
    vec![n, C, SPATIAL[0], SPATIAL[1]]
}

fn per_row() -> usize {
    C * SPATIAL[0] * SPATIAL[1]
}

fn close(what: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    crate::common::check_close(what, got, &crate::common::f64s(want), 1e-5)
}

fn read(t: &Tensor) -> Result<Vec<f32>, String> {
    t.to_vec().map_err(|e| e.to_string())
}

/// Runs the scenario on this replica (`comm.size()` must be 3); `Err`
/// says what differed from the single module.
pub fn run<Comm: Collective>(ctx: &GpuContext, comm: Comm) -> Result<(), String> {
    let e = |e: wgpu_batchnorm::Error| e.to_string();
    let rank = comm.rank();
    if comm.size() != 3 {
        return Err(format!(
            "the scenario needs 3 replicas, not {}",
            comm.size()
        ));
    }
    let cfg = BatchNormConfig::new(C).momentum(Some(0.2));
    let gamma = [1.5, -0.5, 0.75];
    let beta = [0.1, 0.2, -0.3];
    let mut single = BatchNorm2d::new(ctx, cfg.clone()).map_err(e)?;
    let mut module = BatchNorm2d::new(ctx, cfg).map_err(e)?;
    for bn in [&mut single, &mut module] {
        bn.set_weight(&gamma).map_err(e)?;
        bn.set_bias(&beta).map_err(e)?;
    }
    let mut sync = SyncBatchNorm::new(module, comm);
    for (step, split) in SPLITS.iter().enumerate() {
        let at = |w: &str| format!("rank {rank} step {step} {w}");
        let mut rng = crate::common::Rng(1000 + step as u64);
        let x = rng.normals(N * per_row(), 0.5 + step as f64, 2.0);
        let dy = rng.normals(N * per_row(), 0.0, 1.0);
        let start: usize = split[..rank].iter().sum();
        let rows = split[rank];
        let local = |v: &[f32]| v[start * per_row()..(start + rows) * per_row()].to_vec();
        let t = |v: &[f32], n| Tensor::from_slice(ctx, v, &shape(n)).map_err(e);
        let want_y = read(&single.forward(&t(&x, N)?).map_err(e)?)?;
        let y = read(&sync.forward(&t(&local(&x), rows)?).map_err(e)?)?;
        close(&at("output"), &y, &local(&want_y))?;
        let want_g = single.backward(&t(&dy, N)?).map_err(e)?;
        let g = sync.backward(&t(&local(&dy), rows)?).map_err(e)?;
        close(
            &at("grad_input"),
            &read(&g.grad_input)?,
            &local(&read(&want_g.grad_input)?),
        )?;
        // Parameter gradients are local; their sum is the full batch's.
        for (name, got, want) in [
            ("grad_weight", &g.grad_weight, &want_g.grad_weight),
            ("grad_bias", &g.grad_bias, &want_g.grad_bias),
        ] {
            let got = got.as_ref().ok_or(at(name))?;
            let mut summed: Vec<f64> = read(got)?.into_iter().map(f64::from).collect();
            sync.collective().all_reduce_sum(&mut summed).map_err(e)?;
            let summed: Vec<f32> = summed.into_iter().map(|v| v as f32).collect();
            close(&at(name), &summed, &read(want.as_ref().ok_or(at(name))?)?)?;
        }
        check_state(&sync, &single, &at("state"))?;
    }
    // A replica with a bad input: every replica returns an error, and none
    // changes anything.
    let bad_rows = if rank == 1 {
        vec![2, C + 1, 2, 3]
    } else {
        shape(2)
    };
    let bad = Tensor::zeros(ctx, &bad_rows).map_err(e)?;
    if sync.forward(&bad).is_ok() {
        return Err(format!("rank {rank}: a rejected step went through"));
    }
    check_state(
        &sync,
        &single,
        &format!("rank {rank} after the rejected step"),
    )?;
    // Eval: local, with the running statistics.
    sync.module_mut().eval();
    single.eval();
    let mut rng = crate::common::Rng(77);
    let x = rng.normals(N * per_row(), 1.0, 3.0);
    let t = |v: &[f32], n| Tensor::from_slice(ctx, v, &shape(n)).map_err(e);
    let want = read(&single.forward(&t(&x, N)?).map_err(e)?)?;
    let rows = SPLITS[0][rank];
    let start: usize = SPLITS[0][..rank].iter().sum();
    let range = start * per_row()..(start + rows) * per_row();
    let y = read(&sync.forward(&t(&x[range.clone()], rows)?).map_err(e)?)?;
    close(&format!("rank {rank} eval output"), &y, &want[range])?;
    Ok(())
}

fn check_state<Comm: Collective>(
    sync: &SyncBatchNorm<wgpu_batchnorm::Rank2d, Comm>,
    single: &BatchNorm2d,
    at: &str,
) -> Result<(), String> {
    let e = |e: wgpu_batchnorm::Error| e.to_string();
    let m = sync.module();
    let pairs = [
        ("running_mean", m.running_mean(), single.running_mean()),
        ("running_var", m.running_var(), single.running_var()),
    ];
    for (name, got, want) in pairs {
        let (got, want) = (got.map_err(e)?, want.map_err(e)?);
        close(
            &format!("{at} {name}"),
            &got.unwrap_or_default(),
            &want.unwrap_or_default(),
        )?;
    }
    if m.num_batches_tracked() != single.num_batches_tracked() {
        return Err(format!(
            "{at}: num_batches_tracked {} vs {}",
            m.num_batches_tracked(),
            single.num_batches_tracked()
        ));
    }
    Ok(())
}
