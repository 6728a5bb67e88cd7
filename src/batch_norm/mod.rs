//! [`BatchNorm`]: one implementation of `torch.nn.BatchNorm1d`, `2d` and
//! `3d` (the ranks differ only in the inputs they accept): module state,
//! parameters and running statistics. Forward, backward, the workspace and
//! the extensions (checkpoints, folding, shards) are child modules.
//!
//! Parameters and running statistics live in one GPU buffer
//! (`weight | bias | running_mean | running_var`, `C` values each); a
//! training forward updates the running statistics on the GPU, with no
//! host round trip.

mod backward;
mod backward_pass;
#[cfg(feature = "safetensors")]
mod checkpoint;
mod epilogue;
mod fold;
mod forward;
mod forward_pass;
mod lazy_terms;
mod params;
mod recycling;
mod shard;
mod shard_stats;
mod state_dict;
mod workspace;

use std::marker::PhantomData;
use std::sync::Arc;

use crate::config::BatchNormConfig;
use crate::error::{Error, Result};
use crate::gpu::buffer::{padded_bytes, OwnedBuffer, TENSOR_USAGE};
use crate::gpu::context::GpuContext;
use crate::gpu::tensor::Tensor;
use crate::semantics::Layout;
use crate::types::{DType, Rank, Rank1d, Rank2d, Rank3d, SpatialRank};
use params::Param;
use recycling::EncoderUses;
use workspace::Workspace;

pub use backward::Gradients;
#[cfg(feature = "safetensors")]
pub use checkpoint::{batch_norm_prefixes, load_batch_norms, AnyBatchNorm};
pub use epilogue::{Activation, Epilogue};
pub use fold::{FoldedConv, FoldedLinear};
pub use shard::{ShardGradSums, ShardMoments};
pub use state_dict::{FloatDtype, StateDict};

/// `torch.nn.BatchNorm1d`: `(N, C)` or `(N, C, L)` inputs.
pub type BatchNorm1d = BatchNorm<Rank1d>;
/// `torch.nn.BatchNorm2d`: `(N, C, H, W)` inputs.
pub type BatchNorm2d = BatchNorm<Rank2d>;
/// `torch.nn.BatchNorm3d`: `(N, C, D, H, W)` inputs.
pub type BatchNorm3d = BatchNorm<Rank3d>;

/// A batch-norm module on the GPU, PyTorch's semantics for inputs of rank
/// `R` (use the aliases [`BatchNorm1d`], [`BatchNorm2d`], [`BatchNorm3d`]).
pub struct BatchNorm<R: SpatialRank = Rank1d> {
    cfg: BatchNormConfig,
    training: bool,
    num_batches_tracked: u64,
    state: OwnedBuffer,
    ws: Workspace,
    saved: Option<Saved>,
    keep_input_copy: bool,
    /// The application's encoders holding a recorded training forward that
    /// updates the running statistics: while any may still run, eval
    /// forwards write their terms at once instead of leaving them pending
    /// (lazy_terms.rs), which would take them from the updated state.
    state_writers: EncoderUses,
    #[cfg(feature = "safetensors")]
    checkpoint_dtype: FloatDtype,
    _rank: PhantomData<R>,
    /// Declared last: the module's buffers and bind groups are released
    /// before the context's last handle (if this is it) tears the device
    /// down.
    ctx: GpuContext,
}

impl<R: SpatialRank> std::fmt::Debug for BatchNorm<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(R::RANK.module_name())
            .field("config", &self.cfg)
            .field("training", &self.training)
            .field("num_batches_tracked", &self.num_batches_tracked)
            .finish()
    }
}

/// What backward needs from the most recent successful forward.
#[derive(Clone)]
pub(crate) struct Saved {
    /// The input as the kernels read it (a padded copy for unpadded
    /// application buffers, or the module's own copy with
    /// [`BatchNorm::keep_input_copy`]).
    input: Tensor,
    /// The library's writes to the input's buffer when it was saved
    /// ([`Tensor::written_since`]).
    input_mark: u64,
    layout: Layout,
    batch_stats: bool,
    /// Normalised with statistics merged across devices.
    sharded: bool,
    /// What a non-empty forward computed; `None` for an empty input.
    data: Option<SavedData>,
    /// This shard's gradient sums from the last `shard_grad_sums`, for the
    /// parameter gradients of `backward_with_sums`.
    local_sums: Option<shard::LocalSums>,
    /// The fused epilogue of the forward, if any.
    epilogue: Option<epilogue::SavedEpilogue>,
}

/// What a forward over at least one value leaves for backward.
#[derive(Clone)]
pub(crate) struct SavedData {
    /// Per-channel terms the forward wrote (and backward reads).
    terms: Arc<OwnedBuffer>,
    /// The terms are not written yet: an eval forward normalised straight
    /// from the state, and [`BatchNorm::settle_terms`] writes them (from
    /// that same state) before anything reads them or changes the state.
    pending: bool,
    /// The application's encoders that recorded work with the terms
    /// (`encode_forward`, `encode_backward`): that work may run after
    /// later calls, so the buffer serves another forward only once they
    /// have finished or were dropped.
    encoders: EncoderUses,
}

impl<R: SpatialRank> BatchNorm<R> {
    /// Creates a module in training mode with PyTorch's initial values:
    /// weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0.
    pub fn new(ctx: &GpuContext, cfg: BatchNormConfig) -> Result<Self> {
        let _span = crate::trace::span!("BatchNorm::new", num_features = cfg.num_features);
        cfg.validate()?;
        let nf = cfg.num_features;
        let state_bytes = padded_bytes(4 * nf, DType::F32);
        if state_bytes > ctx.device().limits().max_storage_buffer_binding_size {
            return Err(Error::TooLarge(format!("num_features {nf}")));
        }
        let state = ctx.alloc("batchnorm/state", state_bytes, TENSOR_USAGE)?;
        let mut bn = Self {
            ctx: ctx.clone(),
            cfg,
            training: true,
            num_batches_tracked: 0,
            state,
            ws: Workspace::new(ctx)?,
            saved: None,
            keep_input_copy: false,
            state_writers: EncoderUses::default(),
            #[cfg(feature = "safetensors")]
            checkpoint_dtype: FloatDtype::F32,
            _rank: PhantomData,
        };
        bn.reset_parameters()?;
        Ok(bn)
    }

    /// The module's configuration.
    pub fn config(&self) -> &BatchNormConfig {
        &self.cfg
    }

    /// The input ranks this module accepts.
    pub fn rank(&self) -> Rank {
        R::RANK
    }

    /// The context the module runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Switches to training mode (batch statistics, running-stat updates).
    pub fn train(&mut self) {
        self.training = true;
    }

    /// Switches to eval mode (running statistics when tracked).
    pub fn eval(&mut self) {
        self.training = false;
    }

    /// Whether the module is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Batches seen in training mode since the last reset.
    pub fn num_batches_tracked(&self) -> u64 {
        self.num_batches_tracked
    }

    /// Whether each forward keeps its own copy of the input for backward.
    ///
    /// Off by default: backward reads the forward's input buffer when it
    /// runs, which costs nothing. Writes through the library over that
    /// tensor's bytes after the forward (`write_from_slice`, or using it as
    /// another op's output, through any tensor on its buffer) are detected,
    /// and backward returns
    /// [`Error::ModifiedSinceForward`]; writes by the application's own GPU
    /// work to a [`Tensor::from_buffer`] buffer are not visible to the
    /// library. With ping-pong activation buffers, turn this on: each
    /// forward then copies its input (one extra read and write of it) and
    /// backward differentiates that copy.
    pub fn keep_input_copy(&mut self, on: bool) {
        self.keep_input_copy = on;
    }

    /// Resets running_mean to 0, running_var to 1 and num_batches_tracked to 0.
    pub fn reset_running_stats(&mut self) -> Result<()> {
        let nf = self.cfg.num_features;
        self.write_params(&[
            (Param::RunningMean, &vec![0.0; nf]),
            (Param::RunningVar, &vec![1.0; nf]),
        ])?;
        self.num_batches_tracked = 0;
        Ok(())
    }

    /// Resets the running statistics and sets weight to 1 and bias to 0.
    pub fn reset_parameters(&mut self) -> Result<()> {
        let nf = self.cfg.num_features;
        self.write_params(&[
            (Param::Weight, &vec![1.0; nf]),
            (Param::Bias, &vec![0.0; nf]),
            (Param::RunningMean, &vec![0.0; nf]),
            (Param::RunningVar, &vec![1.0; nf]),
        ])?;
        self.num_batches_tracked = 0;
        Ok(())
    }
}

// The checks calls share, and the saved record.
impl<R: SpatialRank> BatchNorm<R> {
    /// `Err` unless `t` lives on this module's context.
    fn check_context(&self, what: &'static str, t: &Tensor) -> Result<()> {
        if !t.context().same_as(&self.ctx) {
            return Err(Error::ContextMismatch { what });
        }
        self.ctx.check_alive()
    }

    /// Checks that `t` lives on this context and has `like`'s shape, dtype
    /// and memory format.
    fn check_like(&self, what: &'static str, t: &Tensor, like: &Tensor) -> Result<()> {
        self.check_context(what, t)?;
        if t.shape() != like.shape() {
            return Err(Error::ShapeMismatch {
                what,
                expected: like.shape().to_vec(),
                actual: t.shape().to_vec(),
            });
        }
        if t.dtype() != like.dtype() {
            return Err(Error::DTypeMismatch {
                what,
                expected: like.dtype(),
                actual: t.dtype(),
            });
        }
        if t.memory_format() != like.memory_format() && t.shape().len() > 2 {
            return Err(Error::FormatMismatch {
                what,
                expected: like.memory_format(),
                actual: t.memory_format(),
            });
        }
        Ok(())
    }

    /// Checks an output tensor: context, shape, dtype, memory format,
    /// usage and room for whole-vec4 writes.
    fn check_output(&self, what: &'static str, out: &Tensor, like: &Tensor) -> Result<()> {
        self.check_like(what, out, like)?;
        out.require_usage(what, wgpu::BufferUsages::STORAGE)?;
        if !out.is_padded() {
            return Err(Error::LengthMismatch {
                name: "output buffer bytes (the data rounded up to 16)",
                expected: usize::try_from(padded_bytes(out.numel(), out.dtype()))
                    .unwrap_or(usize::MAX),
                actual: usize::try_from(out.buffer().size().saturating_sub(out.offset()))
                    .unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }

    /// Makes `saved` the record of the last successful forward; the
    /// previous forward's terms go back to the workspace.
    fn commit_saved(&mut self, saved: Saved) {
        if let Some(data) = self.saved.replace(saved).and_then(|old| old.data) {
            self.ws.give_back_terms(data.terms, data.encoders);
        }
    }
}
