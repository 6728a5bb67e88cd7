//! # wgpu-batchnorm
//!
//! PyTorch-exact `torch.nn.BatchNorm1d`, `BatchNorm2d` and `BatchNorm3d` —
//! training and eval forward, backward, running statistics — as WGSL
//! compute shaders on [`wgpu`] (Vulkan, Metal, DX12, GL).
//!
//! ```
//! use wgpu_batchnorm::{BatchNorm1d, BatchNormConfig, GpuContext, Tensor};
//!
//! # fn main() -> wgpu_batchnorm::Result<()> {
//! let ctx = match GpuContext::new() {
//!     Ok(ctx) => ctx,
//!     // No adapter on this machine: skip, except in CI.
//!     Err(_) if std::env::var("CI").is_err() => return Ok(()),
//!     Err(e) => return Err(e),
//! };
//! let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(3))?;
//! let x = Tensor::from_slice(&ctx, &[0., 1., 2., 3., 4., 5., 6., 7., 8.], &[3, 3])?;
//! let y = bn.forward(&x)?.to_vec()?;
//! assert!((y[0] + 1.2247).abs() < 1e-4 && y[3].abs() < 1e-6 && (y[6] - 1.2247).abs() < 1e-4);
//! assert_eq!(bn.running_mean()?, Some(vec![0.3, 0.4, 0.5]));
//! let rv = bn.running_var()?.unwrap_or_default();
//! assert!(rv.iter().all(|v| (v - 1.8).abs() < 1e-6));
//!
//! // BatchNorm1d(2) on arange(12).reshape(2, 2, 3)
//! let mut bn2 = BatchNorm1d::new(&ctx, BatchNormConfig::new(2))?;
//! let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
//! let y = bn2.forward(&Tensor::from_slice(&ctx, &x, &[2, 2, 3])?)?.to_vec()?;
//! for (got, want) in y[..3].iter().zip([-1.2865, -0.9649, -0.6433]) {
//!     assert!((got - want).abs() < 1e-4);
//! }
//!
//! // Gradients of the last forward.
//! let dy = Tensor::from_slice(&ctx, &[1.0; 12], &[2, 2, 3])?;
//! let g = bn2.backward(&dy)?;
//! assert_eq!(g.grad_bias.map(|t| t.to_vec()).transpose()?, Some(vec![6.0, 6.0]));
//! # Ok(()) }
//! ```
//!
//! ## Semantics
//!
//! For an input of logical shape `(N, C, *spatial)` (`BatchNorm1d`:
//! `(N, C)` or `(N, C, L)`; `BatchNorm2d`: `(N, C, H, W)`; `BatchNorm3d`:
//! `(N, C, D, H, W)`), statistics are per channel over the `n = N * prod(spatial)`
//! values of that channel:
//!
//! - training: `mean = sum(x) / n`, `var = sum((x - mean)^2) / n` (biased),
//!   `y = (x - mean) / sqrt(var + eps) * weight + bias`;
//!   with `track_running_stats`, `num_batches_tracked += 1` and
//!   `running = (1 - m) * running + m * batch`, where `running_var` takes the
//!   unbiased `var * n / (n - 1)` and `m = momentum`, or
//!   `1 / num_batches_tracked` when `momentum` is `None`;
//! - eval: `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`;
//!   without running statistics, eval uses the batch statistics too;
//! - backward with batch statistics, `x_hat = (x - mean) * invstd`:
//!   `grad_bias = sum(dy)`, `grad_weight = sum(dy * x_hat)`,
//!   `dx = weight * invstd * (dy - sum(dy) / n - x_hat * sum(dy * x_hat) / n)`;
//!   in eval with running statistics, `dx = dy * weight * invstd(running_var)`.
//!
//! Variance is numerically stable: each thread runs Welford's update on
//! values shifted by the channel's first value (and scaled by a power of
//! two, so data far from zero does not overflow), and partial states merge
//! with Chan's formula; `E[x^2] - E[x]^2` is never formed. Bad inputs
//! return an [`Error`] with PyTorch's wording, and — unlike PyTorch, which
//! bumps `num_batches_tracked` first — a rejected call changes nothing.
//! NaN in an input poisons its channel; empty inputs give empty outputs
//! (and count as a batch in training), as in PyTorch.
//!
//! Tensors are channels-first by default; [`MemoryFormat::ChannelsLast`]
//! tensors (`(N, H, W, C)` storage, PyTorch's `channels_last`) are
//! normalized in place of a transpose, with the same results.
//!
//! The [`cpu`] module is a reference implementation accumulating in f64.
//!
//! ## Beyond the PyTorch API
//!
//! [`Tensor::from_buffer`] and [`BatchNorm::encode_forward`] /
//! [`BatchNorm::encode_backward`] join an app's own buffers and command
//! encoders; [`BatchNorm::state_dict`] and `.safetensors` checkpoints use
//! PyTorch's names; [`BatchNorm::fold_into_linear`] and
//! [`BatchNorm::fold_into_conv`] fold a trained batch norm into the layer
//! before it; [`BatchNorm::shard_moments`] /
//! [`BatchNorm::forward_with_moments`] and [`BatchNorm::shard_grad_sums`] /
//! [`BatchNorm::backward_with_sums`] do SyncBatchNorm's forward and
//! backward across devices; f16 tensors store f16 and accumulate in f32.
//!
//! ## Determinism
//!
//! Every reduction has a fixed order for a given shape, adapter and
//! [`Tuning`], so the same input gives bit-identical outputs and statistics
//! run after run.
//!
//! ## Where things live
//!
//! `ARCHITECTURE.md` gives the data flow of each op and the file that holds
//! each step; `shaders/README.md` the binding roles and a glossary.
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `safetensors` | yes | `.safetensors` checkpoints (F32/F16/BF16/F64) |
//! | `f16` | yes | f16 tensors ([`DType::F16`]), `half` types in the API |
//! | `serde` | no | `Serialize`/`Deserialize` for [`BatchNormConfig`], [`StateDict`] and the shard structs |
//! | `tracing` | no | `tracing` spans for context creation, pipeline compilation and each op |
//! | `mpi` | no | [`MpiCollective`]: [`SyncBatchNorm`] across processes over MPI (needs Open MPI and libclang to build) |

#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod batch_norm;
mod config;
pub mod cpu;
mod error;
mod gpu;
mod semantics;
mod sync;
mod trace;
mod types;

#[cfg(feature = "safetensors")]
pub use batch_norm::{batch_norm_prefixes, load_batch_norms, AnyBatchNorm};
pub use batch_norm::{
    Activation, BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, Epilogue, FloatDtype, FoldedConv,
    FoldedLinear, Gradients, ShardGradSums, ShardMoments, StateDict,
};
pub use config::{BatchNorm1dConfig, BatchNormConfig};
pub use error::{CheckpointProblem, Error, Result};
pub use gpu::context::GpuContext;
pub use gpu::options::{ContextOptions, ReductionMerge, Tuning};
pub use gpu::tensor::Tensor;
/// The `mpi` crate (rsmpi) this crate's [`MpiCollective`] is built on.
#[cfg(feature = "mpi")]
pub use mpi;
#[cfg(feature = "mpi")]
pub use sync::MpiCollective;
pub use sync::{Collective, LocalCollective, LocalGroup, SyncBatchNorm};
pub use types::{DType, MemoryFormat, Rank, Rank1d, Rank2d, Rank3d, SpatialRank};
pub use wgpu;
