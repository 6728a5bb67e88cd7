//! [`SyncBatchNorm`]: `torch.nn.SyncBatchNorm` over any transport between
//! replicas (threads on one machine, MPI processes across machines), one
//! replica per GPU.
//!
//! Per training step, as PyTorch: forward all-gathers every replica's
//! `(count, mean, M2)` per channel ([`Collective::all_gather`], one call;
//! a module without affine parameters or running statistics, which takes
//! any channel count, first all-gathers each replica's, which must agree)
//! and normalizes with the merged statistics; backward all-reduces
//! `(Σdy, Σdy·x̂)` ([`Collective::all_reduce_sum`], one call) for
//! `grad_input`, and returns this replica's **local** `grad_weight` /
//! `grad_bias` (data-parallel training all-reduces parameter gradients
//! itself, as DDP does). Eval with running statistics is local.
//!
//! Every replica validates its own input before the collective and takes
//! part anyway, with a failure flag: if any replica's input is bad, every
//! replica returns an error and none changes its state, so no replica is
//! left blocked by another's bad input. A replica whose training forward
//! failed after the all-gather (a lost device, out of memory: errors only
//! it sees) keeps its old state while the others update theirs; its next
//! `backward` still takes part in the all-reduce with a failure flag, so
//! every replica's backward returns an error instead of waiting for it.
//! Such an error leaves that replica's running statistics behind its
//! peers': reload them from a peer (`state_dict`) or restart the group.
//! Replicas must also agree on the mode: one in eval while the others
//! train would leave the others waiting. What happens when a collective
//! itself fails is the transport's business: [`LocalGroup`] returns
//! [`Error::Collective`](crate::Error::Collective) when a replica left the
//! group; MPI's default error handler (`MPI_ERRORS_ARE_FATAL`) aborts every
//! process of the job.

mod local;
#[cfg(feature = "mpi")]
mod mpi;

use crate::batch_norm::{BatchNorm, Gradients, ShardGradSums, ShardMoments};
use crate::error::{Error, Result};
use crate::gpu::tensor::Tensor;
use crate::semantics;
use crate::types::SpatialRank;

pub use local::{LocalCollective, LocalGroup};
#[cfg(feature = "mpi")]
pub use mpi::MpiCollective;

/// The collective operations SyncBatchNorm needs between replicas. Every
/// replica calls them in the same order with slices of the same length.
pub trait Collective {
    /// Number of replicas.
    fn size(&self) -> usize;
    /// This replica's index, `0..size`.
    fn rank(&self) -> usize;
    /// Every replica's `send`, concatenated in rank order.
    fn all_gather(&self, send: &[f64]) -> Result<Vec<f64>>;
    /// Element-wise sum over replicas, in place.
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()>;
}

/// `torch.nn.SyncBatchNorm` around a batch-norm module of any rank.
///
/// ```
/// use wgpu_batchnorm::{BatchNorm2d, BatchNormConfig, GpuContext, LocalGroup, SyncBatchNorm, Tensor};
/// # fn main() -> wgpu_batchnorm::Result<()> {
/// // Two replicas as threads, each on its own context.
/// let handles: Vec<_> = LocalGroup::new(2)
///     .into_iter()
///     .map(|comm| {
///         std::thread::spawn(move || -> wgpu_batchnorm::Result<Vec<f32>> {
///             let Ok(ctx) = GpuContext::new() else { return Ok(vec![]) };
///             let bn = BatchNorm2d::new(&ctx, BatchNormConfig::new(2))?;
///             let mut sync = SyncBatchNorm::new(bn, comm);
///             let local: Vec<f32> = (0..8).map(|v| (v + 8 * sync.rank()) as f32).collect();
///             let x = Tensor::from_slice(&ctx, &local, &[1, 2, 2, 2])?;
///             sync.forward(&x)?; // statistics of both replicas' values
///             Ok(sync.module().running_mean()?.unwrap_or_default())
///         })
///     })
///     .collect();
/// let means: Vec<Vec<f32>> = handles.into_iter().map(|h| h.join().unwrap()).collect::<Result<_, _>>()?;
/// assert_eq!(means[0], means[1]); // every replica holds the same running statistics
/// # Ok(()) }
/// ```
pub struct SyncBatchNorm<R: SpatialRank, C: Collective> {
    bn: BatchNorm<R>,
    comm: C,
    /// What the last forward was, which decides what backward does.
    last: Last,
}

/// The last forward of a [`SyncBatchNorm`].
#[derive(Debug, Clone, Copy)]
enum Last {
    /// None yet, or a local (eval) forward: backward is the module's own.
    Local,
    /// A synchronized forward over `count` values in all, of `channels`
    /// channels: backward all-reduces.
    Synced { count: u64, channels: usize },
    /// A training forward of `channels` channels that failed after the
    /// replicas agreed on them: backward still takes part in the
    /// all-reduce (with a failure flag), so replicas whose forward
    /// succeeded get an error instead of waiting for this one.
    Failed { channels: usize },
}

impl<R: SpatialRank, C: Collective> std::fmt::Debug for SyncBatchNorm<R, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncBatchNorm")
            .field("module", &self.bn)
            .field("rank", &self.comm.rank())
            .field("size", &self.comm.size())
            .finish()
    }
}

/// Payload flag: this replica's input was rejected.
const FAILED: f64 = 1.0;

impl<R: SpatialRank, C: Collective> SyncBatchNorm<R, C> {
    /// Wraps `module` (built identically on every replica) with the
    /// replicas' collective `comm`.
    pub fn new(module: BatchNorm<R>, comm: C) -> Self {
        Self {
            bn: module,
            comm,
            last: Last::Local,
        }
    }

    /// The wrapped module (parameters, running statistics, mode).
    pub fn module(&self) -> &BatchNorm<R> {
        &self.bn
    }

    /// The wrapped module, mutably (`train()`, `eval()`, setters).
    pub fn module_mut(&mut self) -> &mut BatchNorm<R> {
        &mut self.bn
    }

    /// The module and the collective back.
    pub fn into_parts(self) -> (BatchNorm<R>, C) {
        (self.bn, self.comm)
    }

    /// This replica's index.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Number of replicas.
    pub fn world_size(&self) -> usize {
        self.comm.size()
    }

    /// The collective.
    pub fn collective(&self) -> &C {
        &self.comm
    }

    /// The channel count every replica's payload carries: the module's
    /// `num_features` where it has per-channel parameters or running
    /// statistics; otherwise the input's, which the replicas exchange first
    /// (one more all-gather) and must agree on, as PyTorch's all-gather of
    /// equal sizes needs. `Ok(Err(_))`: the forward is rejected on every
    /// replica alike (this replica's own error where its input was bad).
    fn agreed_channels(&self, local: &Result<ShardMoments>) -> Result<Result<usize>> {
        let cfg = self.bn.config();
        if cfg.affine || cfg.track_running_stats {
            return Ok(Ok(cfg.num_features));
        }
        let mine = local.as_ref().map_or(-1.0, |m| m.mean.len() as f64);
        let all = self.comm.all_gather(&[mine])?;
        if all.len() != self.comm.size() {
            return Err(Error::Collective(format!(
                "all-gather returned {} values, expected {}",
                all.len(),
                self.comm.size()
            )));
        }
        if let Err(e) = local {
            return Ok(Err(e.clone()));
        }
        let failed: Vec<usize> = (all.iter().enumerate())
            .filter(|(_, &c)| c < 0.0)
            .map(|(r, _)| r)
            .collect();
        if !failed.is_empty() {
            return Ok(Err(Error::Collective(format!(
                "replica(s) {failed:?} rejected their input; no replica ran the forward"
            ))));
        }
        match all.iter().find(|&&c| c != mine) {
            Some(&other) => Ok(Err(Error::ChannelMismatch {
                name: "SyncBatchNorm input (another replica's channels)",
                expected: other as usize,
                actual: mine as usize,
            })),
            None => Ok(Ok(mine as usize)),
        }
    }

    /// Forward of this replica's shard `x` (its rows of the global batch;
    /// it may be empty). In training, one all-gather merges every
    /// replica's statistics and every replica updates its running
    /// statistics with the global ones; otherwise the module's plain,
    /// local forward.
    ///
    /// If a training forward returns an error on this replica only (one
    /// its peers did not see: a lost device, out of memory), still call
    /// [`SyncBatchNorm::backward`] for that step (with any tensor: it is
    /// not read): it joins the all-reduce with a failure flag, so every
    /// replica's backward returns an error instead of waiting for this one.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _span = crate::trace::span!("SyncBatchNorm::forward", rank = self.comm.rank());
        if !self.bn.is_training() {
            // A rejected forward keeps the previous one, as the module does.
            let y = self.bn.forward(x)?;
            self.last = Last::Local;
            return Ok(y);
        }
        let prev = self.last;
        let local = self.bn.shard_moments(x);
        let nf = self.agreed_channels(&local)??;
        let local = local.and_then(|m| {
            if m.mean.len() == nf {
                Ok(m)
            } else {
                Err(Error::ChannelMismatch {
                    name: "SyncBatchNorm input",
                    expected: nf,
                    actual: m.mean.len(),
                })
            }
        });
        // [failed, count, mean (nf), M2 (nf)], the same length everywhere.
        let payload: Vec<f64> = match &local {
            Ok(m) => [0.0, m.count as f64]
                .into_iter()
                .chain(m.mean.iter().copied())
                .chain(m.m2.iter().copied())
                .collect(),
            Err(_) => std::iter::once(FAILED)
                .chain(std::iter::repeat_n(0.0, 1 + 2 * nf))
                .collect(),
        };
        // Until the forward succeeds, a backward must not pair with the
        // peers' as if this replica had run it.
        self.last = Last::Failed { channels: nf };
        let gathered = self.comm.all_gather(&payload)?;
        let shards = match (local, read_moments(&gathered, self.comm.size(), nf)?) {
            (Ok(_), Ok(shards)) => shards,
            // Rejected inputs are seen by every replica alike: none ran
            // the forward, and each keeps its previous one.
            (Err(e), _) => {
                self.last = prev;
                return Err(e);
            }
            (Ok(_), Err(failed)) => {
                self.last = prev;
                return Err(Error::Collective(format!(
                    "replica(s) {failed:?} rejected their input; no replica ran the forward"
                )));
            }
        };
        // What the merged statistics decide (one value per channel in the
        // whole group) every replica decides alike: none runs the forward.
        let merged = ShardMoments::merge(&shards).and_then(|global| {
            let (shape, format) = (x.shape(), x.memory_format());
            let cfg = self.bn.config();
            semantics::plan_forward(cfg, R::RANK, true, shape, format, Some(global.count))
                .map(|_| global)
        });
        let global = match merged {
            Ok(global) => global,
            Err(e) => {
                self.last = prev;
                return Err(e);
            }
        };
        let y = self.bn.forward_with_moments(x, &global)?;
        self.last = Last::Synced {
            count: global.count,
            channels: nf,
        };
        Ok(y)
    }

    /// Backward of the last forward for this replica's `grad_output`.
    /// After a synchronized forward, one all-reduce of `(Σdy, Σdy·x̂)` gives
    /// `grad_input`; `grad_weight` and `grad_bias` are this replica's local
    /// sums (add them over replicas, or average them as DDP does). After a
    /// local forward, the module's plain backward.
    pub fn backward(&mut self, grad_output: &Tensor) -> Result<Gradients> {
        let _span = crate::trace::span!("SyncBatchNorm::backward", rank = self.comm.rank());
        let (count, nf) = match self.last {
            Last::Local => return self.bn.backward(grad_output),
            Last::Synced { count, channels } => (Some(count), channels),
            Last::Failed { channels } => (None, channels),
        };
        let local = match count {
            Some(_) => self.bn.shard_grad_sums(grad_output),
            None => Err(Error::NoForward),
        }
        .and_then(|s| {
            if s.sum_dy.len() == nf {
                Ok(s)
            } else {
                Err(Error::ChannelMismatch {
                    name: "SyncBatchNorm gradient sums",
                    expected: nf,
                    actual: s.sum_dy.len(),
                })
            }
        });
        // [failed, Σdy (nf), Σdy·x̂ (nf)]
        let mut payload: Vec<f64> = match &local {
            Ok(s) => std::iter::once(0.0)
                .chain(s.sum_dy.iter().copied())
                .chain(s.sum_dy_xhat.iter().copied())
                .collect(),
            Err(_) => std::iter::once(FAILED)
                .chain(std::iter::repeat_n(0.0, 2 * nf))
                .collect(),
        };
        self.comm.all_reduce_sum(&mut payload)?;
        local?;
        let (failed, sums) = payload.split_first().unwrap_or((&0.0, &[]));
        if *failed != 0.0 {
            return Err(Error::Collective(format!(
                "{failed} replica(s) rejected their grad_output or had no successful forward; no replica ran backward"
            )));
        }
        let (dy, dyx) = sums.split_at_checked(nf).unwrap_or((&[], &[]));
        let global = ShardGradSums {
            count: count.unwrap_or(0),
            sum_dy: dy.to_vec(),
            sum_dy_xhat: dyx.to_vec(),
        };
        self.bn.backward_with_sums(grad_output, &global)
    }
}

/// Every replica's shard moments from the gathered payloads, or the ranks
/// of the replicas that rejected their input; `Err` for a malformed
/// gather.
fn read_moments(
    gathered: &[f64],
    size: usize,
    nf: usize,
) -> Result<std::result::Result<Vec<ShardMoments>, Vec<usize>>> {
    let width = 2 + 2 * nf;
    if gathered.len() != width * size {
        return Err(Error::Collective(format!(
            "all-gather returned {} values, expected {}",
            gathered.len(),
            width * size
        )));
    }
    let failed: Vec<usize> = gathered
        .chunks_exact(width)
        .enumerate()
        .filter(|(_, p)| p.first() != Some(&0.0))
        .map(|(r, _)| r)
        .collect();
    if !failed.is_empty() {
        return Ok(Err(failed));
    }
    Ok(Ok(gathered
        .chunks_exact(width)
        .map(|p| {
            let (head, rest) = p.split_at_checked(2).unwrap_or((&[], &[]));
            let (mean, m2) = rest.split_at_checked(nf).unwrap_or((&[], &[]));
            ShardMoments {
                count: head.get(1).copied().unwrap_or(0.0) as u64,
                mean: mean.to_vec(),
                m2: m2.to_vec(),
            }
        })
        .collect()))
}
