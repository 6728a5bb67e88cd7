//! # wgpu-batchnorm
//!
//! PyTorch-exact `torch.nn.BatchNorm1d` — training and eval forward,
//! backward, running statistics — as WGSL compute shaders on [`wgpu`]
//! (Vulkan, Metal, DX12, GL).
//!
//! ```
//! use wgpu_batchnorm::{BatchNorm1d, BatchNorm1dConfig, GpuContext, Tensor};
//!
//! # fn main() -> wgpu_batchnorm::Result<()> {
//! let ctx = match GpuContext::new() {
//!     Ok(ctx) => ctx,
//!     // No adapter on this machine: skip, except in CI.
//!     Err(_) if std::env::var("CI").is_err() => return Ok(()),
//!     Err(e) => return Err(e),
//! };
//! let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3))?;
//! let x = Tensor::from_slice(&ctx, &[0., 1., 2., 3., 4., 5., 6., 7., 8.], &[3, 3])?;
//! let y = bn.forward(&x)?.to_vec()?;
//! assert!((y[0] + 1.2247).abs() < 1e-4 && y[3].abs() < 1e-6 && (y[6] - 1.2247).abs() < 1e-4);
//! assert_eq!(bn.running_mean()?.unwrap(), vec![0.3, 0.4, 0.5]);
//! let rv = bn.running_var()?.unwrap();
//! assert!(rv.iter().all(|v| (v - 1.8).abs() < 1e-6));
//!
//! // BatchNorm1d(2) on arange(12).reshape(2, 2, 3)
//! let mut bn2 = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(2))?;
//! let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
//! let y = bn2.forward(&Tensor::from_slice(&ctx, &x, &[2, 2, 3])?)?.to_vec()?;
//! for (got, want) in y[..3].iter().zip([-1.2865, -0.9649, -0.6433]) {
//!     assert!((got - want).abs() < 1e-4);
//! }
//!
//! // Gradients of the last forward.
//! let dy = Tensor::from_slice(&ctx, &[1.0; 12], &[2, 2, 3])?;
//! let g = bn2.backward(&dy)?;
//! assert_eq!(g.grad_bias.unwrap().to_vec()?, vec![6.0, 6.0]);
//! # Ok(()) }
//! ```
//!
//! ## Semantics
//!
//! For an input `(N, C)` or `(N, C, L)`, statistics are per channel over the
//! `n = N * L` values of that channel:
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
//! values shifted by the channel's first value (and scaled by a power of two
//! when that value is huge, so data near 1e30 does not overflow), and
//! partial states merge with Chan's formula; `E[x^2] - E[x]^2` is never
//! formed. Bad inputs return
//! an [`Error`] with PyTorch's wording, and — unlike PyTorch, which bumps
//! `num_batches_tracked` first — a rejected call changes nothing. NaN in an
//! input poisons its channel; empty inputs give empty outputs (and count as
//! a batch in training), as in PyTorch.
//!
//! The [`cpu`] module is a reference implementation accumulating in f64.
//!
//! Beyond the PyTorch API: [`Tensor::from_buffer`] and
//! [`BatchNorm1d::encode_forward`] / [`BatchNorm1d::encode_backward`] join an
//! app's own buffers and command encoders; [`BatchNorm1d::state_dict`] and
//! `.safetensors` checkpoints use PyTorch's names; [`BatchNorm1d::fold_into_linear`]
//! folds a trained batch norm into the preceding Linear layer;
//! [`BatchNorm1d::shard_moments`] / [`BatchNorm1d::forward_with_moments`]
//! and [`BatchNorm1d::shard_grad_sums`] / [`BatchNorm1d::backward_with_sums`]
//! do SyncBatchNorm's forward and backward across devices; f16 tensors
//! ([`DType::F16`]) store f16 and accumulate in f32.
//!
//! ## Determinism
//!
//! Every reduction has a fixed order for a given shape, adapter and
//! [`ContextOptions`], so the same input gives bit-identical outputs and
//! statistics run after run.

#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod batch_norm;
mod checkpoint;
mod config;
mod context;
pub mod cpu;
mod error;
mod fold;
pub mod kernels;
mod semantics;
mod shard;
mod tensor;

pub use batch_norm::{BatchNorm1d, Gradients};
pub use checkpoint::StateDict;
pub use config::BatchNorm1dConfig;
pub use context::{ContextOptions, GpuContext};
pub use error::{Error, Result};
pub use fold::FoldedLinear;
pub use shard::{ShardGradSums, ShardMoments};
pub use tensor::{DType, Tensor};
pub use wgpu;
