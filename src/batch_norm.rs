//! [`BatchNorm1d`]: module state (parameters, running statistics, workspace)
//! and the public PyTorch-shaped API.

use crate::config::BatchNorm1dConfig;
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernels::{self, ExecPlan, Params, FLAG_AFFINE, FLAG_BATCH_STATS, FLAG_UPDATE_RUNNING};
use crate::semantics::{self, ForwardPlan, Layout};
use crate::tensor::{DType, OwnedBuffer, Tensor};

/// Gradients returned by [`BatchNorm1d::backward`].
#[derive(Debug, Clone)]
pub struct Gradients {
    /// d loss / d input, same shape as the forward's input.
    pub grad_input: Tensor,
    /// d loss / d weight, `[C]`; `Some` iff the module is affine.
    pub grad_weight: Option<Tensor>,
    /// d loss / d bias, `[C]`; `Some` iff the module is affine.
    pub grad_bias: Option<Tensor>,
}

/// What backward needs from the most recent successful forward.
#[derive(Clone)]
pub(crate) struct Saved {
    pub(crate) input: Tensor,
    pub(crate) layout: Layout,
    pub(crate) batch_stats: bool,
    pub(crate) empty: bool,
    /// Normalised with statistics merged across devices.
    pub(crate) sharded: bool,
}

/// What a backward pass computes.
#[derive(Clone, Copy)]
pub(crate) enum BackwardMode<'a> {
    /// Gradient sums of this batch, then grad_input.
    Full,
    /// This shard's gradient sums only (grad_weight, grad_bias).
    SumsOnly,
    /// Gradient sums merged across devices, `[mean(dy) | mean(dy * x_hat) |
    /// sum(dy) | sum(dy * x_hat)]` (C values each), then grad_input.
    Given(&'a wgpu::Buffer),
}

/// Buffers reused from call to call; they only grow.
struct Workspace {
    forward_uniform: OwnedBuffer,
    backward_uniform: OwnedBuffer,
    partials: Option<OwnedBuffer>,
    chan: Option<OwnedBuffer>,
    /// Per-channel gradient outputs of a non-affine module (never returned).
    grad_scratch: Option<(Tensor, Tensor)>,
}

/// `torch.nn.BatchNorm1d` on the GPU.
///
/// Parameters and running statistics live in one GPU buffer
/// (`weight | bias | running_mean | running_var`); a training forward updates
/// the running statistics on the GPU, with no host round trip.
pub struct BatchNorm1d {
    ctx: GpuContext,
    cfg: BatchNorm1dConfig,
    training: bool,
    num_batches_tracked: u64,
    state: OwnedBuffer,
    ws: Workspace,
    saved: Option<Saved>,
}

impl std::fmt::Debug for BatchNorm1d {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchNorm1d")
            .field("config", &self.cfg)
            .field("training", &self.training)
            .field("num_batches_tracked", &self.num_batches_tracked)
            .finish()
    }
}

/// Which quarter of the state buffer.
#[derive(Clone, Copy)]
enum Slot {
    Weight = 0,
    Bias = 1,
    RunningMean = 2,
    RunningVar = 3,
}

const UNIFORM_SIZE: u64 = std::mem::size_of::<Params>() as u64;
const UNIFORM_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::UNIFORM.union(wgpu::BufferUsages::COPY_DST);

impl BatchNorm1d {
    /// Creates a module in training mode with PyTorch's initial values:
    /// weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0.
    pub fn new(ctx: &GpuContext, cfg: BatchNorm1dConfig) -> Result<Self> {
        cfg.validate()?;
        let nf = cfg.num_features;
        let state_bytes = (4 * nf as u64) * 4;
        if state_bytes > ctx.device().limits().max_storage_buffer_binding_size {
            return Err(Error::TooLarge(format!("num_features {nf}")));
        }
        let uniform = UNIFORM_USAGE;
        let (state, ws) = ctx.scoped(|| {
            let state = OwnedBuffer::new(
                ctx,
                "batchnorm/state",
                crate::tensor::padded_bytes(4 * nf),
                crate::tensor::TENSOR_USAGE,
            );
            let ws = Workspace {
                forward_uniform: OwnedBuffer::new(
                    ctx,
                    "batchnorm/forward-params",
                    UNIFORM_SIZE,
                    uniform,
                ),
                backward_uniform: OwnedBuffer::new(
                    ctx,
                    "batchnorm/backward-params",
                    UNIFORM_SIZE,
                    uniform,
                ),
                partials: None,
                chan: None,
                grad_scratch: None,
            };
            Ok((state, ws))
        })?;
        let mut bn = Self {
            ctx: ctx.clone(),
            cfg,
            training: true,
            num_batches_tracked: 0,
            state,
            ws,
            saved: None,
        };
        bn.reset_parameters()?;
        Ok(bn)
    }

    /// The module's configuration.
    pub fn config(&self) -> &BatchNorm1dConfig {
        &self.cfg
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

    /// Resets running_mean to 0, running_var to 1 and num_batches_tracked to 0.
    pub fn reset_running_stats(&mut self) -> Result<()> {
        let nf = self.cfg.num_features;
        self.write_slot(Slot::RunningMean, &vec![0.0; nf])?;
        self.write_slot(Slot::RunningVar, &vec![1.0; nf])?;
        self.num_batches_tracked = 0;
        Ok(())
    }

    /// Resets the running statistics and sets weight to 1 and bias to 0.
    pub fn reset_parameters(&mut self) -> Result<()> {
        let nf = self.cfg.num_features;
        self.reset_running_stats()?;
        self.write_slot(Slot::Weight, &vec![1.0; nf])?;
        self.write_slot(Slot::Bias, &vec![0.0; nf])
    }

    fn write_slot(&self, slot: Slot, values: &[f32]) -> Result<()> {
        let offset = (slot as u64) * (self.cfg.num_features as u64) * 4;
        self.ctx.scoped(|| {
            self.ctx
                .queue()
                .write_buffer(&self.state.buffer, offset, bytemuck::cast_slice(values));
            Ok(())
        })
    }

    fn read_slot(&self, slot: Slot) -> Result<Vec<f32>> {
        let nf = self.cfg.num_features;
        let offset = (slot as u64) * (nf as u64) * 4;
        crate::tensor::read_buffer(&self.ctx, &self.state.buffer, offset, nf)
    }

    fn set_checked(&mut self, slot: Slot, name: &'static str, values: &[f32]) -> Result<()> {
        let available = match slot {
            Slot::Weight | Slot::Bias => self.cfg.affine,
            Slot::RunningMean | Slot::RunningVar => self.cfg.track_running_stats,
        };
        if !available {
            return Err(not_available(name));
        }
        semantics::check_len(name, values, self.cfg.num_features)?;
        self.write_slot(slot, values)
    }

    fn get_checked(&self, slot: Slot, available: bool) -> Result<Option<Vec<f32>>> {
        if !available {
            self.ctx.check_alive()?;
            return Ok(None);
        }
        self.read_slot(slot).map(Some)
    }

    /// Sets the per-channel weight (gamma). Errors when not affine or on a
    /// length other than `num_features`.
    pub fn set_weight(&mut self, values: &[f32]) -> Result<()> {
        self.set_checked(Slot::Weight, "weight", values)
    }

    /// Sets the per-channel bias (beta).
    pub fn set_bias(&mut self, values: &[f32]) -> Result<()> {
        self.set_checked(Slot::Bias, "bias", values)
    }

    /// Sets running_mean. Errors when running statistics are not tracked.
    pub fn set_running_mean(&mut self, values: &[f32]) -> Result<()> {
        self.set_checked(Slot::RunningMean, "running_mean", values)
    }

    /// Sets running_var.
    pub fn set_running_var(&mut self, values: &[f32]) -> Result<()> {
        self.set_checked(Slot::RunningVar, "running_var", values)
    }

    /// Sets num_batches_tracked (as when loading a checkpoint).
    pub fn set_num_batches_tracked(&mut self, value: u64) {
        self.num_batches_tracked = value;
    }

    /// The weight, `Some` iff affine (reads back from the GPU).
    pub fn weight(&self) -> Result<Option<Vec<f32>>> {
        self.get_checked(Slot::Weight, self.cfg.affine)
    }

    /// The bias, `Some` iff affine.
    pub fn bias(&self) -> Result<Option<Vec<f32>>> {
        self.get_checked(Slot::Bias, self.cfg.affine)
    }

    /// The running mean, `Some` iff `track_running_stats`.
    pub fn running_mean(&self) -> Result<Option<Vec<f32>>> {
        self.get_checked(Slot::RunningMean, self.cfg.track_running_stats)
    }

    /// The running (unbiased) variance, `Some` iff `track_running_stats`.
    pub fn running_var(&self) -> Result<Option<Vec<f32>>> {
        self.get_checked(Slot::RunningVar, self.cfg.track_running_stats)
    }

    /// The most recent successful forward's record.
    pub(crate) fn saved(&self) -> Option<&Saved> {
        self.saved.as_ref()
    }

    pub(crate) fn check_tensor(&self, t: &Tensor) -> Result<()> {
        if !t.context().same_as(&self.ctx) {
            return Err(Error::ContextMismatch);
        }
        self.ctx.check_alive()
    }

    /// Forward pass: normalizes `x` of shape `(N, C)` or `(N, C, L)` into a
    /// new tensor.
    ///
    /// In training mode (or without running statistics) it uses the batch
    /// mean and biased variance and, when tracking, updates the running
    /// statistics; in eval mode it uses the running statistics. One command
    /// submission. A rejected call changes nothing.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let y = Tensor::zeros_of(&self.ctx, x.shape(), x.dtype())?;
        self.forward_into(x, &y)?;
        Ok(y)
    }

    /// Forward pass writing into `out` (same shape as `x`), so steady-state
    /// loops allocate nothing. `out` must not alias `x`, and its buffer
    /// needs room for the data rounded up to 16 bytes.
    pub fn forward_into(&mut self, x: &Tensor, out: &Tensor) -> Result<()> {
        let ctx = self.ctx.clone();
        let commit = ctx.submit("batchnorm/forward", |encoder| {
            self.record_forward(encoder, x, out)
        })?;
        self.commit(commit);
        Ok(())
    }

    /// Records the forward pass into the caller's `encoder` without
    /// submitting it, so batch norm joins the app's own command stream.
    ///
    /// The module's state (running statistics, `num_batches_tracked`, what
    /// `backward` differentiates) advances as if the work ran; submit the
    /// encoder before reading results. Record at most one forward (and one
    /// backward) per module per submission: they share the module's
    /// workspace buffers.
    pub fn encode_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
    ) -> Result<Tensor> {
        let y = Tensor::zeros_of(&self.ctx, x.shape(), x.dtype())?;
        self.encode_forward_into(encoder, x, &y)?;
        Ok(y)
    }

    /// [`BatchNorm1d::encode_forward`] writing into `out`.
    pub fn encode_forward_into(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        let commit = ctx.scoped(|| self.record_forward(encoder, x, out))?;
        self.commit(commit);
        Ok(())
    }

    pub(crate) fn commit(&mut self, c: Commit) {
        self.num_batches_tracked = c.num_batches_tracked;
        self.saved = Some(c.saved);
    }

    pub(crate) fn check_output(
        &self,
        out: &Tensor,
        shape: &[usize],
        dtype: DType,
        what: &'static str,
    ) -> Result<()> {
        self.check_tensor(out)?;
        if out.shape() != shape {
            return Err(Error::ShapeMismatch {
                expected: shape.to_vec(),
                actual: out.shape().to_vec(),
            });
        }
        if out.dtype() != dtype {
            return Err(Error::InvalidArgument(format!(
                "{what}: dtype {:?}, expected {dtype:?}",
                out.dtype()
            )));
        }
        if !out.is_padded() {
            return Err(Error::InvalidArgument(format!(
                "{what}: the buffer needs room for the data rounded up to 16 bytes"
            )));
        }
        Ok(())
    }

    fn record_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        out: &Tensor,
    ) -> Result<Commit> {
        let plan = semantics::plan_forward(&self.cfg, self.training, x.shape())?;
        self.check_tensor(x)?;
        self.check_output(out, x.shape(), x.dtype(), "forward output")?;
        self.ctx.kernels().set(x.dtype())?;
        let x = &x.padded(encoder)?;
        let nbt = self.num_batches_tracked + u64::from(plan.track_step);
        if !plan.empty {
            let factor = semantics::momentum_factor(&self.cfg, nbt) as f32;
            self.encode_forward_passes(
                encoder,
                x,
                Output::Normalized {
                    y: out,
                    given: None,
                },
                &plan,
                factor,
            )?;
        }
        let saved = Saved {
            input: x.clone(),
            layout: plan.layout,
            batch_stats: plan.batch_stats,
            empty: plan.empty,
            sharded: false,
        };
        Ok(Commit {
            num_batches_tracked: nbt,
            saved,
        })
    }

    fn flags(&self, plan_batch_stats: bool, update_running: bool) -> u32 {
        let mut flags = 0;
        if update_running {
            flags |= FLAG_UPDATE_RUNNING;
        }
        if self.cfg.affine {
            flags |= FLAG_AFFINE;
        }
        if plan_batch_stats {
            flags |= FLAG_BATCH_STATS;
        }
        flags
    }

    /// Chunks `layout` for this device's binding limits.
    fn exec_plan(&self, layout: &Layout, dtype: DType) -> Result<ExecPlan> {
        let limits = self.ctx.device().limits();
        kernels::plan_exec(
            layout,
            dtype.size(),
            limits.max_storage_buffer_binding_size,
            u64::from(limits.min_storage_buffer_offset_alignment),
            limits.max_compute_workgroups_per_dimension,
            kernels::target_groups(self.ctx.adapter_info().map(|i| i.device_type)),
            self.ctx.uses_thread_partials(),
        )
        .map_err(Error::TooLarge)
    }

    /// Makes sure the workspace buffers hold `plan`'s partials and `C` channels.
    fn reserve(&mut self, plan: &ExecPlan) -> Result<()> {
        let c = plan.layout.c;
        let need_partials = (plan.partial_count().max(1) as u64) * 16;
        let need_chan = (kernels::TERM_FLOATS * c.next_multiple_of(4).max(4)) as u64 * 4;
        let limit = self.ctx.device().limits().max_storage_buffer_binding_size;
        if need_partials > limit || need_chan > limit {
            return Err(Error::TooLarge(format!("{c} channels")));
        }
        let ctx = &self.ctx;
        grow(
            &mut self.ws.partials,
            need_partials,
            "batchnorm/partials",
            ctx,
            wgpu::BufferUsages::STORAGE,
        );
        grow(
            &mut self.ws.chan,
            need_chan,
            "batchnorm/channel-terms",
            ctx,
            wgpu::BufferUsages::STORAGE,
        );
        Ok(())
    }

    pub(crate) fn encode_forward_passes(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        out: Output<'_>,
        plan: &ForwardPlan,
        momentum: f32,
    ) -> Result<()> {
        let layout = plan.layout;
        let exec = self.exec_plan(&layout, x.dtype())?;
        self.reserve(&exec)?;
        let flags = self.flags(plan.batch_stats, plan.track_step);
        let eps = self.cfg.eps as f32;
        write_uniforms(
            &self.ctx,
            &mut self.ws.forward_uniform,
            "batchnorm/forward-params",
            &exec,
            flags,
            eps,
            momentum,
        );
        let (partials, chan) = self.workspace()?;
        let ctx = &self.ctx;
        let k = ctx.kernels().set(x.dtype())?;
        let device = ctx.device();
        let uniforms = &self.ws.forward_uniform;
        let state = self.state.buffer.as_entire_binding();
        let head = x.window(0, exec.head);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("batchnorm/forward"),
            timestamp_writes: None,
        });
        if plan.batch_stats && !matches!(out, Output::Normalized { given: Some(_), .. }) {
            for (i, chunk) in exec.chunks.iter().enumerate() {
                let xs = x.window(chunk.start, chunk.count);
                kernels::dispatch(
                    device,
                    &mut pass,
                    k.moments_partial_for(&exec),
                    "batchnorm/moments_partial",
                    &[
                        (0, uniform_slot(ctx, uniforms, i + 1)),
                        (1, xs),
                        (4, partials.clone()),
                        (7, head.clone()),
                    ],
                    chunk.reduce.groups(),
                );
            }
        }
        let y = match out {
            Output::Moments(moments) => {
                kernels::dispatch(
                    device,
                    &mut pass,
                    &k.moments_export,
                    "batchnorm/moments_export",
                    &[
                        (0, uniform_slot(ctx, uniforms, 0)),
                        (2, partials),
                        (7, head),
                        (8, moments.as_entire_binding()),
                    ],
                    kernels::channel_groups(layout.c),
                );
                return Ok(());
            }
            Output::Normalized { y, given } => {
                let mut finalize: Vec<(u32, wgpu::BindingResource<'_>)> = vec![
                    (0, uniform_slot(ctx, uniforms, 0)),
                    (3, state),
                    (4, chan.clone()),
                ];
                let (pipeline, label) = if let Some(given) = given {
                    finalize.push((7, head));
                    finalize.push((9, given.as_entire_binding()));
                    (&k.moments_apply, "batchnorm/moments_apply")
                } else if plan.batch_stats {
                    finalize.push((2, partials));
                    finalize.push((7, head));
                    (&k.moments_finalize, "batchnorm/moments_finalize")
                } else {
                    (&k.eval_prepare, "batchnorm/eval_prepare")
                };
                kernels::dispatch(
                    device,
                    &mut pass,
                    pipeline,
                    label,
                    &finalize,
                    kernels::channel_groups(layout.c),
                );
                y
            }
        };
        for (i, chunk) in exec.chunks.iter().enumerate() {
            let (start, count) = (chunk.start, chunk.count);
            kernels::dispatch(
                device,
                &mut pass,
                k.normalize_for(&exec),
                "batchnorm/normalize",
                &[
                    (0, uniform_slot(ctx, uniforms, i + 1)),
                    (1, x.window(start, count)),
                    (3, chan.clone()),
                    (4, y.window(start, count)),
                ],
                kernels::elementwise_groups(count, layout.row()),
            );
        }
        Ok(())
    }

    fn workspace(&self) -> Result<(wgpu::BindingResource<'_>, wgpu::BindingResource<'_>)> {
        match (&self.ws.partials, &self.ws.chan) {
            (Some(p), Some(c)) => Ok((p.buffer.as_entire_binding(), c.buffer.as_entire_binding())),
            _ => Err(Error::InvalidArgument("workspace not reserved".into())),
        }
    }

    /// Backward pass: gradients of the most recent successful forward for
    /// `grad_output` (same shape as that forward's input). One submission.
    ///
    /// Training (batch statistics):
    /// `dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))`;
    /// eval with running statistics: `dx = dy * weight * invstd(running_var)`.
    /// `grad_weight = sum(dy * x_hat)`, `grad_bias = sum(dy)` per channel.
    pub fn backward(&mut self, grad_output: &Tensor) -> Result<Gradients> {
        let mut g = self.alloc_gradients(grad_output)?;
        self.backward_into(grad_output, &mut g)?;
        Ok(g)
    }

    /// Backward pass writing into `grads` (typically returned by an earlier
    /// [`BatchNorm1d::backward`] of the same shape), allocating nothing.
    pub fn backward_into(&mut self, grad_output: &Tensor, grads: &mut Gradients) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.submit("batchnorm/backward", |encoder| {
            self.encode_backward_into(encoder, grad_output, grads)
        })
    }

    /// Records the backward pass into the caller's `encoder` without submitting.
    pub fn encode_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        grad_output: &Tensor,
    ) -> Result<Gradients> {
        let mut g = self.alloc_gradients(grad_output)?;
        self.encode_backward_into(encoder, grad_output, &mut g)?;
        Ok(g)
    }

    fn grad_channels(&self, saved: &Saved) -> usize {
        if saved.empty {
            self.cfg.num_features
        } else {
            saved.layout.c
        }
    }

    pub(crate) fn alloc_gradients(&self, grad_output: &Tensor) -> Result<Gradients> {
        let saved = self.saved.as_ref().ok_or(Error::NoForward)?;
        self.check_tensor(grad_output)?;
        let gc = self.grad_channels(saved);
        let affine = self.cfg.affine;
        Ok(Gradients {
            grad_input: Tensor::zeros_of(&self.ctx, grad_output.shape(), grad_output.dtype())?,
            grad_weight: if affine {
                Some(Tensor::zeros(&self.ctx, &[gc])?)
            } else {
                None
            },
            grad_bias: if affine {
                Some(Tensor::zeros(&self.ctx, &[gc])?)
            } else {
                None
            },
        })
    }

    /// [`BatchNorm1d::encode_backward`] writing into `grads`.
    pub fn encode_backward_into(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        grad_output: &Tensor,
        grads: &mut Gradients,
    ) -> Result<()> {
        self.encode_backward_with(encoder, grad_output, grads, BackwardMode::Full)
    }

    /// The backward pass in `mode`: plain, a shard's gradient sums only, or
    /// with gradient sums merged across devices.
    pub(crate) fn encode_backward_with(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        grad_output: &Tensor,
        grads: &mut Gradients,
        mode: BackwardMode<'_>,
    ) -> Result<()> {
        let saved = self.saved.clone().ok_or(Error::NoForward)?;
        self.check_tensor(grad_output)?;
        match (saved.sharded, &mode) {
            (true, BackwardMode::Full) => {
                return Err(Error::InvalidArgument(
                    "a forward with cross-device statistics needs gradient sums merged \
                     across devices: use shard_grad_sums and backward_with_sums"
                        .into(),
                ))
            }
            (false, BackwardMode::SumsOnly | BackwardMode::Given(_)) => {
                return Err(Error::InvalidArgument(
                    "gradient sums across devices need a forward_with_moments first".into(),
                ))
            }
            _ => {}
        }
        if grad_output.shape() != saved.input.shape() {
            return Err(Error::ShapeMismatch {
                expected: saved.input.shape().to_vec(),
                actual: grad_output.shape().to_vec(),
            });
        }
        let gc = self.grad_channels(&saved);
        if grad_output.dtype() != saved.input.dtype() {
            return Err(Error::InvalidArgument(format!(
                "grad_output dtype {:?} differs from the input's {:?}",
                grad_output.dtype(),
                saved.input.dtype()
            )));
        }
        let sums_only = matches!(mode, BackwardMode::SumsOnly);
        if !sums_only {
            self.check_output(
                &grads.grad_input,
                grad_output.shape(),
                grad_output.dtype(),
                "grad_input",
            )?;
        }
        let grad_output = &grad_output.padded(encoder)?;
        let ctx = self.ctx.clone();
        // A shard's sums always go to the given tensors, affine or not.
        let (gw, gb) = if self.cfg.affine || sums_only {
            let take = |t: &Option<Tensor>, name: &'static str| -> Result<Tensor> {
                let t = t.as_ref().ok_or_else(|| {
                    Error::InvalidArgument(format!("{name} is required for an affine module"))
                })?;
                self.check_output(t, &[gc], DType::F32, name)?;
                Ok(t.clone())
            };
            (
                take(&grads.grad_weight, "grad_weight")?,
                take(&grads.grad_bias, "grad_bias")?,
            )
        } else {
            match &self.ws.grad_scratch {
                Some((w, b)) if w.numel() == gc => (w.clone(), b.clone()),
                _ => {
                    let pair = (Tensor::zeros(&ctx, &[gc])?, Tensor::zeros(&ctx, &[gc])?);
                    self.ws.grad_scratch = Some(pair.clone());
                    pair
                }
            }
        };
        ctx.scoped(|| {
            if saved.empty {
                for t in [&gw, &gb] {
                    encoder.clear_buffer(t.buffer(), t.offset(), Some((gc as u64) * 4));
                }
                Ok(())
            } else {
                self.encode_backward_passes(
                    encoder,
                    &saved,
                    grad_output,
                    &grads.grad_input,
                    (&gw, &gb),
                    mode,
                )
            }
        })
    }

    fn encode_backward_passes(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        saved: &Saved,
        dy: &Tensor,
        dx: &Tensor,
        (gw, gb): (&Tensor, &Tensor),
        mode: BackwardMode<'_>,
    ) -> Result<()> {
        let layout = saved.layout;
        let exec = self.exec_plan(&layout, dy.dtype())?;
        let flags = self.flags(saved.batch_stats, false);
        let eps = self.cfg.eps as f32;
        write_uniforms(
            &self.ctx,
            &mut self.ws.backward_uniform,
            "batchnorm/backward-params",
            &exec,
            flags,
            eps,
            0.0,
        );
        let (partials, chan) = self.workspace()?;
        let ctx = &self.ctx;
        let k = ctx.kernels().set(dy.dtype())?;
        let device = ctx.device();
        let uniforms = &self.ws.backward_uniform;
        let x = &saved.input;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("batchnorm/backward"),
            timestamp_writes: None,
        });
        if let BackwardMode::Given(given) = mode {
            kernels::dispatch(
                device,
                &mut pass,
                &k.grads_apply,
                "batchnorm/grads_apply",
                &[
                    (0, uniform_slot(ctx, uniforms, 0)),
                    (4, chan.clone()),
                    (5, gw.binding()),
                    (6, gb.binding()),
                    (9, given.as_entire_binding()),
                ],
                kernels::channel_groups(layout.c),
            );
        } else {
            for (i, chunk) in exec.chunks.iter().enumerate() {
                let (start, count) = (chunk.start, chunk.count);
                kernels::dispatch(
                    device,
                    &mut pass,
                    k.grads_partial_for(&exec),
                    "batchnorm/grads_partial",
                    &[
                        (0, uniform_slot(ctx, uniforms, i + 1)),
                        (1, x.window(start, count)),
                        (2, dy.window(start, count)),
                        (3, chan.clone()),
                        (4, partials.clone()),
                    ],
                    chunk.reduce.groups(),
                );
            }
            kernels::dispatch(
                device,
                &mut pass,
                &k.grads_finalize,
                "batchnorm/grads_finalize",
                &[
                    (0, uniform_slot(ctx, uniforms, 0)),
                    (2, partials),
                    (4, chan.clone()),
                    (5, gw.binding()),
                    (6, gb.binding()),
                ],
                kernels::channel_groups(layout.c),
            );
        }
        if let BackwardMode::SumsOnly = mode {
            return Ok(());
        }
        for (i, chunk) in exec.chunks.iter().enumerate() {
            let (start, count) = (chunk.start, chunk.count);
            kernels::dispatch(
                device,
                &mut pass,
                k.grad_input_for(&exec),
                "batchnorm/grad_input",
                &[
                    (0, uniform_slot(ctx, uniforms, i + 1)),
                    (1, x.window(start, count)),
                    (2, dy.window(start, count)),
                    (3, chan.clone()),
                    (4, dx.window(start, count)),
                ],
                kernels::elementwise_groups(count, layout.row()),
            );
        }
        Ok(())
    }
}

/// Bytes between uniform slots: one `Params` per aligned slot.
fn uniform_stride(ctx: &GpuContext) -> u64 {
    let align = u64::from(ctx.device().limits().min_uniform_buffer_offset_alignment).max(1);
    UNIFORM_SIZE.next_multiple_of(align)
}

/// Grows `slot` to at least `need` bytes (never shrinks).
fn grow(
    slot: &mut Option<OwnedBuffer>,
    need: u64,
    label: &str,
    ctx: &GpuContext,
    usage: wgpu::BufferUsages,
) {
    if slot.as_ref().is_none_or(|b| b.buffer.size() < need) {
        *slot = Some(OwnedBuffer::new(ctx, label, need, usage));
    }
}

/// Writes slot 0 (totals, for the finalize steps) and one slot per chunk.
fn write_uniforms(
    ctx: &GpuContext,
    buffer: &mut OwnedBuffer,
    label: &str,
    exec: &ExecPlan,
    flags: u32,
    eps: f32,
    momentum: f32,
) {
    let slots = 1 + exec.chunks.len();
    let stride = uniform_stride(ctx);
    let mut bytes = vec![0u8; slots * stride as usize];
    let mut put = |slot: usize, p: Params| {
        let at = slot * stride as usize;
        bytes[at..at + std::mem::size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
    };
    put(0, exec.total_params(flags, eps, momentum));
    let subgroups = ctx.kernels().subgroups.unwrap_or(0);
    for k in 0..exec.chunks.len() {
        let mut p = exec.chunk_params(k, flags, eps, momentum);
        // Subgroup combining applies when one channel owns a workgroup.
        p.subgroups = if p.cpw == 1 { subgroups } else { 0 };
        put(k + 1, p);
    }
    if buffer.buffer.size() < bytes.len() as u64 {
        *buffer = OwnedBuffer::new(ctx, label, bytes.len() as u64, UNIFORM_USAGE);
    }
    ctx.queue().write_buffer(&buffer.buffer, 0, &bytes);
}

/// Binding of uniform slot `i` of a buffer written by [`write_uniforms`].
fn uniform_slot<'a>(
    ctx: &GpuContext,
    buffer: &'a OwnedBuffer,
    i: usize,
) -> wgpu::BindingResource<'a> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer: &buffer.buffer,
        offset: i as u64 * uniform_stride(ctx),
        size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
    })
}

/// What a forward records: the normalized output (with batch, running or
/// given merged statistics), or only the shard's exported moments.
pub(crate) enum Output<'a> {
    /// Normalize into `y`; `given` holds merged cross-device statistics.
    Normalized {
        y: &'a Tensor,
        given: Option<&'a wgpu::Buffer>,
    },
    /// Export `(shift, (mean - shift) * scale, M2 * scale², scale)` per channel.
    Moments(&'a wgpu::Buffer),
}

/// State changes of a forward, applied only once the GPU work was accepted.
pub(crate) struct Commit {
    pub(crate) num_batches_tracked: u64,
    pub(crate) saved: Saved,
}

fn not_available(name: &'static str) -> Error {
    match name {
        "weight" | "bias" => Error::NotAvailable(name, "the module is not affine"),
        _ => Error::NotAvailable(name, "the module does not track running statistics"),
    }
}
