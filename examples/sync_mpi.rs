//! Data-parallel training of a batch-norm layer over MPI, one process per
//! GPU, as PyTorch's `SyncBatchNorm` + `DistributedDataParallel` do: each
//! rank holds an equal slice of every batch, `SyncBatchNorm` shares the
//! batch statistics (one all-gather per forward, one all-reduce per
//! backward), and the ranks all-reduce and average the parameter gradients
//! (as DDP does) before each SGD step. Every rank also runs the same steps
//! on the whole batch in one process and prints how far it is from that.
//!
//! ```sh
//! cargo build --release --features mpi --example sync_mpi
//! mpirun -n 2 target/release/examples/sync_mpi
//! mpirun -n 4 target/release/examples/sync_mpi --timing   # communication vs compute per step
//! ```

use std::cell::Cell;
use std::time::{Duration, Instant};

use wgpu_batchnorm::{
    mpi, BatchNorm1d, BatchNormConfig, Collective, GpuContext, MpiCollective, SyncBatchNorm, Tensor,
};

/// A collective that adds up the time spent in its calls.
struct Timed<C> {
    inner: C,
    spent: Cell<Duration>,
}

impl<C: Collective> Collective for Timed<C> {
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn all_gather(&self, send: &[f64]) -> wgpu_batchnorm::Result<Vec<f64>> {
        let t = Instant::now();
        let r = self.inner.all_gather(send);
        self.spent.set(self.spent.get() + t.elapsed());
        r
    }
    fn all_reduce_sum(&self, values: &mut [f64]) -> wgpu_batchnorm::Result<()> {
        let t = Instant::now();
        let r = self.inner.all_reduce_sum(values);
        self.spent.set(self.spent.get() + t.elapsed());
        r
    }
}

/// Deterministic inputs and regression targets of step `step`, the same
/// on every rank.
fn batch(step: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..len)
        .map(|i| ((i * 7 + step * 13) as f32 * 0.37).sin() * 3.0 + (i % 5) as f32 * 0.5)
        .collect();
    let t: Vec<f32> = x.iter().map(|v| 0.8 * v.tanh() + 0.1).collect();
    (x, t)
}

/// `d loss / d y` of the mean squared error over `y`.
fn mse_grad(y: &[f32], t: &[f32]) -> Vec<f32> {
    let n = y.len().max(1) as f32;
    y.iter().zip(t).map(|(a, b)| 2.0 * (a - b) / n).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .map(|d| if d.is_nan() { f32::INFINITY } else { d })
        .fold(0.0, f32::max)
}

/// The largest difference from one process that passes (the example
/// exits with 1 above it; CI runs it on 2 ranks).
const TOLERANCE: f32 = 1e-4;

fn run() -> wgpu_batchnorm::Result<()> {
    let timing = std::env::args().any(|a| a == "--timing");
    let universe = mpi::initialize()
        .ok_or_else(|| wgpu_batchnorm::Error::Collective("MPI could not be initialized".into()))?;
    let comm = Timed {
        inner: MpiCollective::new(universe.world()),
        spent: Cell::new(Duration::ZERO),
    };
    let (rank, size) = (comm.rank(), comm.size());
    let ctx = GpuContext::new()?;
    // A batch of 48 rows of (C, L), split evenly over the ranks.
    let (c, l) = if timing { (64, 256) } else { (8, 16) };
    let (n, steps, lr) = (48, if timing { 30 } else { 20 }, 0.5f32);
    if n % size != 0 {
        return Err(wgpu_batchnorm::Error::Collective(format!(
            "run with a number of ranks dividing {n}"
        )));
    }
    let rows = n / size;
    let row = c * l;
    let cfg = BatchNormConfig::new(c);
    let mut sync = SyncBatchNorm::new(BatchNorm1d::new(&ctx, cfg.clone())?, comm);
    let mut single = BatchNorm1d::new(&ctx, cfg)?;
    let (mut w, mut b) = (vec![1.0f32; c], vec![0.0f32; c]);
    let (mut w1, mut b1) = (w.clone(), b.clone());
    let (mut compute, mut worst) = (Duration::ZERO, 0.0f32);
    for step in 0..steps {
        let (x, t) = batch(step, n * row);
        let local = rank * rows * row..(rank + 1) * rows * row;
        // Data-parallel: this rank's rows, gradients averaged over ranks.
        let started = Instant::now();
        let comm_before = sync.collective().spent.get();
        sync.module_mut().set_weight(&w)?;
        sync.module_mut().set_bias(&b)?;
        let y = sync
            .forward(&Tensor::from_slice(&ctx, &x[local.clone()], &[rows, c, l])?)?
            .to_vec()?;
        let dy = mse_grad(&y, &t[local.clone()]);
        let g = sync.backward(&Tensor::from_slice(&ctx, &dy, &[rows, c, l])?)?;
        let mut grads: Vec<f64> = Vec::with_capacity(2 * c);
        for p in [&g.grad_weight, &g.grad_bias] {
            let v = p
                .as_ref()
                .map(|t| t.to_vec())
                .transpose()?
                .unwrap_or_default();
            grads.extend(v.into_iter().map(f64::from));
        }
        sync.collective().all_reduce_sum(&mut grads)?; // DDP: sum, then average
        for (p, g) in w.iter_mut().chain(b.iter_mut()).zip(&grads) {
            *p -= lr * (*g / size as f64) as f32;
        }
        compute += started.elapsed() - (sync.collective().spent.get() - comm_before);
        // One process, the whole batch.
        single.set_weight(&w1)?;
        single.set_bias(&b1)?;
        let y1 = single
            .forward(&Tensor::from_slice(&ctx, &x, &[n, c, l])?)?
            .to_vec()?;
        let g1 = single.backward(&Tensor::from_slice(&ctx, &mse_grad(&y1, &t), &[n, c, l])?)?;
        let gw1 = g1
            .grad_weight
            .map(|t| t.to_vec())
            .transpose()?
            .unwrap_or_default();
        let gb1 = g1
            .grad_bias
            .map(|t| t.to_vec())
            .transpose()?
            .unwrap_or_default();
        for (p, g) in w1.iter_mut().zip(&gw1).chain(b1.iter_mut().zip(&gb1)) {
            *p -= lr * g;
        }
        worst = worst.max(max_diff(&y, &y1[local]));
    }
    let m = sync.module();
    for (a, b) in [
        (w.clone(), w1.clone()),
        (b.clone(), b1.clone()),
        (
            m.running_mean()?.unwrap_or_default(),
            single.running_mean()?.unwrap_or_default(),
        ),
        (
            m.running_var()?.unwrap_or_default(),
            single.running_var()?.unwrap_or_default(),
        ),
    ] {
        worst = worst.max(max_diff(&a, &b));
    }
    println!("rank {rank}: max |diff| vs one process: {worst:e}");
    if worst.is_nan() || worst > TOLERANCE {
        return Err(wgpu_batchnorm::Error::Collective(format!(
            "rank {rank} differs from one process by {worst:e} (> {TOLERANCE:e})"
        )));
    }
    if timing {
        let comm = sync.collective().spent.get();
        println!(
            "rank {rank} of {size}: per step, compute {:.2} ms, communication {:.2} ms \
             (one all-gather, two all-reduces: SyncBatchNorm's and the parameter gradients'), \
             batch ({rows}, {c}, {l}) per rank",
            compute.as_secs_f64() * 1e3 / steps as f64,
            comm.as_secs_f64() * 1e3 / steps as f64,
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
