//! A module's reusable GPU buffers: uniform blocks per op, partial states,
//! per-channel terms, and the bind-group cache. They grow and never shrink;
//! every growth allocates the new buffer first, so an out-of-memory leaves
//! the old ones in place and the module usable.
//!
//! The per-channel terms a forward writes are what its backward reads, so
//! they belong to that forward's [`Saved`](super::Saved) record: a forward
//! takes a free terms buffer from the [`TermsPool`], and the previous
//! forward's buffer goes back to it once the new forward commits. Nothing
//! else writes a saved forward's statistics.

use std::sync::Arc;

use super::recycling::{EncoderUses, RecordedUniforms, TermsPool};
use super::BatchNorm;
use crate::error::{Error, Result};
use crate::gpu::bind_cache::BindGroupCache;
use crate::gpu::buffer::BufferSlice;
use crate::gpu::buffer::{OwnedBuffer, UNIFORM_USAGE};
use crate::gpu::context::GpuContext;
use crate::gpu::launch::uniform_stride;
use crate::gpu::params::OpScalars;
use crate::gpu::params::{Params, TERM_FLOATS};
use crate::gpu::plan::plan_exec;
use crate::gpu::plan::ExecPlan;
use crate::gpu::tensor::Tensor;
use crate::semantics::Layout;
use crate::types::SpatialRank;
use crate::types::{DType, MemoryFormat};

/// Where an op's recorded work goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The module's own encoder, submitted at the end of the call: the
    /// uniforms are written with `queue.write_buffer`, which lands first.
    Submit,
    /// The application's encoder, submitted whenever the application
    /// chooses: the uniforms go into a buffer of this call's
    /// ([`RecordedUniforms`]), which no other call writes until the
    /// encoder has run or was dropped.
    Encoder,
}

/// Which uniform buffer an op uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Forward,
    Backward,
}

pub(crate) struct Workspace {
    forward_uniforms: OwnedBuffer,
    backward_uniforms: OwnedBuffer,
    partials: Option<OwnedBuffer>,
    terms: TermsPool,
    recorded_uniforms: RecordedUniforms,
    /// Parameter-gradient outputs of a module without parameters (the
    /// sums feed grad_input; never returned).
    grad_scratch: Vec<(&'static str, Tensor)>,
    /// The output gradient through an epilogue without a residual.
    dy_scratch: Option<Tensor>,
    /// Each channel's first value where the first row is longer than a
    /// binding (`gather_heads`): written and read within one submission.
    heads: Option<Tensor>,
    /// The last op's launch plan and what it planned: a training loop
    /// plans each layout once (and a forward, which checks its plan before
    /// recording anything, does not plan it twice).
    plan: Option<(Layout, DType, ExecPlan)>,
    pub(crate) binds: BindGroupCache,
}

/// Bytes of the terms buffer for `c` channels.
pub(crate) fn terms_bytes(c: usize) -> u64 {
    (TERM_FLOATS * c.next_multiple_of(4).max(4)) as u64 * 4
}

impl Workspace {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let stride = uniform_stride(ctx.device());
        Ok(Self {
            forward_uniforms: ctx.alloc("batchnorm/forward-params", stride * 2, UNIFORM_USAGE)?,
            backward_uniforms: ctx.alloc("batchnorm/backward-params", stride * 2, UNIFORM_USAGE)?,
            partials: None,
            terms: TermsPool::default(),
            recorded_uniforms: RecordedUniforms::default(),
            grad_scratch: Vec::new(),
            dy_scratch: None,
            heads: None,
            plan: None,
            binds: BindGroupCache::new(),
        })
    }

    /// Bytes of `plan`'s partials buffer: the partial states, or the
    /// rescue's sums, then its flag (cleared before each backward); an
    /// error where one binding cannot hold them.
    pub fn partials_bytes(ctx: &GpuContext, plan: &ExecPlan) -> Result<u64> {
        let need = (plan.rescue_flag() as u64 + 1) * 16;
        let limit = ctx.device().limits().max_storage_buffer_binding_size;
        if need > limit {
            return Err(Error::TooLarge(format!(
                "{} channels need {need} bytes of partial states; bindings hold {limit}",
                plan.layout.c
            )));
        }
        Ok(need)
    }

    /// The buffer `gather_heads` fills with each channel's first value, `c`
    /// values of `dtype`: reused while large enough (every op that gathers
    /// writes it before it reads it, within one submission).
    pub fn heads(&mut self, ctx: &GpuContext, c: usize, dtype: DType) -> Result<Tensor> {
        if let Some(h) = self
            .heads
            .as_ref()
            .filter(|h| h.dtype() == dtype && h.numel() >= c)
        {
            return Ok(h.clone());
        }
        let heads = Tensor::alloc(
            ctx,
            &[c],
            dtype,
            MemoryFormat::ChannelsFirst,
            "batchnorm/heads",
        )?;
        self.heads = Some(heads.clone());
        Ok(heads)
    }

    /// The partial-state buffer, grown to hold `plan`'s partials
    /// (`COPY_DST`: the rescue's flag is cleared before each backward).
    pub fn partials(&mut self, ctx: &GpuContext, plan: &ExecPlan) -> Result<wgpu::Buffer> {
        let need = Self::partials_bytes(ctx, plan)?;
        if let Some(p) = self.partials.as_ref().filter(|p| p.size() >= need) {
            return Ok(p.buffer.clone());
        }
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let grown = ctx.alloc("batchnorm/partials", need, usage)?;
        let buffer = grown.buffer.clone();
        self.partials = Some(grown);
        Ok(buffer)
    }

    /// A terms buffer for `c` channels that no saved forward uses and no
    /// recorded work may still touch: a recycled one when one is large
    /// enough, else a new one.
    pub fn take_terms(&mut self, ctx: &GpuContext, c: usize) -> Result<Arc<OwnedBuffer>> {
        let need = terms_bytes(c);
        let limit = ctx.device().limits().max_storage_buffer_binding_size;
        if need > limit {
            return Err(Error::TooLarge(format!(
                "{c} channels need {need} bytes of per-channel terms; bindings hold {limit}"
            )));
        }
        if let Some(t) = self.terms.take(need) {
            return Ok(t);
        }
        let fresh = ctx.alloc("batchnorm/terms", need, wgpu::BufferUsages::STORAGE)?;
        Ok(Arc::new(fresh))
    }

    /// The scratch tensor `name` of `c` f32 values (grown as needed).
    pub fn grad_scratch(
        &mut self,
        ctx: &GpuContext,
        name: &'static str,
        c: usize,
    ) -> Result<Tensor> {
        if let Some((_, t)) = self
            .grad_scratch
            .iter()
            .find(|(n, t)| *n == name && t.numel() == c)
        {
            return Ok(t.clone());
        }
        let t = Tensor::alloc(
            ctx,
            &[c],
            DType::F32,
            MemoryFormat::ChannelsFirst,
            "batchnorm/grad-scratch",
        )?;
        self.grad_scratch.retain(|(n, _)| *n != name);
        self.grad_scratch.push((name, t.clone()));
        Ok(t)
    }

    /// A scratch tensor like `like` (shape, dtype, format), reused while
    /// they stay the same: the output gradient through an epilogue without
    /// a residual.
    pub fn output_grad_scratch(&mut self, ctx: &GpuContext, like: &Tensor) -> Result<Tensor> {
        let fits = |t: &Tensor| {
            t.shape() == like.shape()
                && t.dtype() == like.dtype()
                && t.memory_format() == like.memory_format()
        };
        if let Some(t) = self.dy_scratch.as_ref().filter(|t| fits(t)) {
            return Ok(t.clone());
        }
        let t = Tensor::alloc(
            ctx,
            like.shape(),
            like.dtype(),
            like.memory_format(),
            "batchnorm/epilogue-grad",
        )?;
        self.dy_scratch = Some(t.clone());
        Ok(t)
    }

    /// Returns a terms buffer no saved forward uses any more; `uses`
    /// counts the application's encoders that recorded work with it.
    pub fn give_back_terms(&mut self, terms: Arc<OwnedBuffer>, uses: EncoderUses) {
        self.terms.give_back(terms, uses);
    }

    /// Writes `params` (slot 0 first) for work recorded into `encoder` and
    /// bound to `target`: into `op`'s uniform buffer, which only the
    /// module's own submissions read, or into one of the recorded work's
    /// own; returns the buffer.
    pub fn write_params(
        &mut self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        op: Op,
        target: Target,
        params: &[Params],
    ) -> Result<wgpu::Buffer> {
        let stride = uniform_stride(ctx.device()) as usize;
        let mut bytes = vec![0u8; params.len().max(1) * stride];
        for (chunk, p) in bytes.chunks_mut(stride).zip(params) {
            let raw = bytemuck::bytes_of(p);
            if let Some(dst) = chunk.get_mut(..raw.len()) {
                dst.copy_from_slice(raw);
            }
        }
        if target == Target::Encoder {
            return self.recorded_uniforms.write(ctx, encoder, &bytes);
        }
        let size = bytes.len() as u64;
        let (slot, label) = match op {
            Op::Forward => (&mut self.forward_uniforms, "batchnorm/forward-params"),
            Op::Backward => (&mut self.backward_uniforms, "batchnorm/backward-params"),
        };
        if slot.size() < size {
            *slot = ctx.alloc(label, size, UNIFORM_USAGE)?;
        }
        ctx.queue().write_buffer(&slot.buffer, 0, &bytes);
        Ok(slot.buffer.clone())
    }
}

/// What an op's compute pass needs: the launch plan, the partial states and
/// the uniforms (already written for the op's target).
pub(crate) struct Prepared {
    pub exec: ExecPlan,
    pub partials: BufferSlice,
    pub uniforms: wgpu::Buffer,
}

impl<R: SpatialRank> BatchNorm<R> {
    /// The launch plan of an op over `layout` of `dtype` values, checked
    /// (its partials fit one binding), so that callers can reject a layout
    /// the device cannot take before they record anything; the last one is
    /// kept (a plan depends only on the layout, the dtype and the context).
    pub(super) fn plan_op(&mut self, layout: &Layout, dtype: DType) -> Result<ExecPlan> {
        if let Some((l, d, exec)) = &self.ws.plan {
            if l == layout && *d == dtype {
                return Ok(exec.clone());
            }
        }
        let ctx = &self.ctx;
        let exec = plan_exec(layout, dtype.size(), ctx.limits(), ctx.merge_model())
            .map_err(Error::TooLarge)?;
        Workspace::partials_bytes(ctx, &exec)?;
        self.ws.plan = Some((*layout, dtype, exec.clone()));
        Ok(exec)
    }

    /// Plans an op over `layout` of `dtype` values, grows the partials, and
    /// writes the uniforms (`flags`, the module's eps, `momentum`).
    pub(super) fn prepare_op(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        (layout, dtype): (&Layout, DType),
        (op, flags, momentum): (Op, u32, f32),
        target: Target,
    ) -> Result<Prepared> {
        let ctx = self.ctx.clone();
        let exec = self.plan_op(layout, dtype)?;
        let partials = BufferSlice::whole(&self.ws.partials(&ctx, &exec)?);
        let scalars = OpScalars {
            flags,
            eps: self.cfg.eps_f32(),
            momentum,
            subgroups: ctx.pipelines().subgroups().unwrap_or(0),
        };
        let params = exec.all_params(&scalars);
        let uniforms = self.ws.write_params(&ctx, encoder, op, target, &params)?;
        Ok(Prepared {
            exec,
            partials,
            uniforms,
        })
    }
}
