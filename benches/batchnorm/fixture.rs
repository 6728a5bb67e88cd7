//! One benchmarked shape: its tensors (at staggered buffer offsets), the
//! modules, the baselines, and the ops timed to GPU completion.

use std::time::{Duration, Instant};

use wgpu_batchnorm::{
    wgpu, BatchNorm, BatchNormConfig, Epilogue, GpuContext, Gradients, MemoryFormat, Rank1d,
    Rank2d, Rank3d, SpatialRank, Tensor,
};

use crate::baseline::Kernel;

/// A timed operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Copy,
    Train,
    Eval,
    Backward,
    /// Eval forward with a fused ReLU.
    EvalRelu,
    /// Training forward with fused add + ReLU.
    TrainAddRelu,
    /// Training forward, then separate add and ReLU passes.
    TrainThenAddRelu,
    /// The floor of a training forward: a read-only reduction pass, then
    /// a copy (3 passes, no arithmetic to speak of).
    TrainFloor,
    /// The floor of a backward: a read-only pass over two tensors, then
    /// an add of them (5 passes).
    BackwardFloor,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Copy => "copy",
            Op::Train => "train_forward",
            Op::Eval => "eval_forward",
            Op::Backward => "backward",
            Op::EvalRelu => "eval_forward + relu (fused)",
            Op::TrainAddRelu => "train_forward + add + relu (fused)",
            Op::TrainThenAddRelu => "train_forward, then add, then relu",
            Op::TrainFloor => "floor: sum, then copy",
            Op::BackwardFloor => "floor: sum of two, then add",
        }
    }

    /// Minimal passes over the tensor.
    pub fn passes(self) -> usize {
        match self {
            Op::Copy | Op::Eval | Op::EvalRelu => 2,
            Op::Train | Op::TrainFloor => 3,
            Op::TrainAddRelu => 4,
            Op::TrainThenAddRelu => 8,
            Op::Backward | Op::BackwardFloor => 5,
        }
    }
}

/// The module of the shape's rank.
enum Module {
    D1(BatchNorm<Rank1d>),
    D2(BatchNorm<Rank2d>),
    D3(BatchNorm<Rank3d>),
}

macro_rules! each {
    ($m:expr, $bn:ident => $e:expr) => {
        match $m {
            Module::D1($bn) => $e,
            Module::D2($bn) => $e,
            Module::D3($bn) => $e,
        }
    };
}

fn module<R: SpatialRank>(ctx: &GpuContext, c: usize, train: bool) -> BatchNorm<R> {
    let mut bn = BatchNorm::<R>::new(ctx, BatchNormConfig::new(c)).expect("bn");
    if !train {
        bn.eval();
    }
    bn
}

fn new_module(ctx: &GpuContext, shape: &[usize], train: bool) -> Module {
    match shape.len() {
        2 | 3 => Module::D1(module(ctx, shape[1], train)),
        4 => Module::D2(module(ctx, shape[1], train)),
        _ => Module::D3(module(ctx, shape[1], train)),
    }
}

/// Tensors of `shape`, each in its own buffer at offset `512 B * k` (the
/// buffers start on page boundaries), with the given contents. On CPU
/// adapters the relative alignment of tensors modulo 4 KiB moves timings by
/// up to ~1.8x from run to run (loads and stores whose addresses agree
/// modulo 4 KiB alias in the CPU's load/store queues); a fixed stagger
/// keeps every op comparable from run to run.
fn staggered<const K: usize>(
    ctx: &GpuContext,
    shape: &[usize],
    format: MemoryFormat,
    data: [Option<&[f32]>; K],
) -> [Tensor; K] {
    let numel: usize = shape.iter().product();
    std::array::from_fn(|k| {
        let offset = 512 * k as u64;
        let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench/tensor"),
            size: offset + (numel as u64 * 4).div_ceil(16) * 16,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        if let Some(d) = data[k] {
            ctx.queue()
                .write_buffer(&buffer, offset, bytemuck::cast_slice(d));
        }
        Tensor::from_buffer(ctx, buffer, offset, shape)
            .expect("tensor")
            .with_memory_format(format)
    })
}

/// Median of `runs` timings of `run` (each to GPU completion), after one
/// untimed warm-up call.
pub fn median(runs: usize, mut run: impl FnMut()) -> Duration {
    run();
    median_of(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                run();
                t.elapsed()
            })
            .collect(),
    )
}

/// The median of `times` (not empty).
pub fn median_of(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

pub struct Fixture {
    pub ctx: GpuContext,
    pub shape: Vec<usize>,
    pub format: MemoryFormat,
    x: Tensor,
    y: Tensor,
    dy: Tensor,
    r: Tensor,
    z: Tensor,
    train: Module,
    eval: Module,
    /// A training module for the fused ops only, so `train`'s last
    /// forward (what backward differentiates) stays plain.
    fused: Module,
    grads: Gradients,
    copy: Kernel,
    add: Kernel,
    relu: Kernel,
    /// The floors' kernels: sum of x, sum of x * dy, x + dy.
    floors: [Kernel; 3],
}

impl Fixture {
    pub fn new(ctx: &GpuContext, shape: &[usize], format: MemoryFormat) -> Self {
        let numel: usize = shape.iter().product();
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let host: Vec<f32> = (0..numel)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 1.0
            })
            .collect();
        let [x, y, dy, r, z, dx] = staggered(
            ctx,
            shape,
            format,
            [Some(&host), None, Some(&host), Some(&host), None, None],
        );
        let mut train = new_module(ctx, shape, true);
        each!(&mut train, bn => bn.forward_into(&x, &y).expect("warm-up"));
        let mut grads = each!(&mut train, bn => bn.backward(&dy).expect("warm-up"));
        // The input gradient staggered like the other tensors.
        grads.grad_input = dx;
        each!(&mut train, bn => bn.backward_into(&dy, &mut grads).expect("warm-up"));
        let eval = new_module(ctx, shape, false);
        let fused = new_module(ctx, shape, true);
        let copy = fastest_copy(ctx, shape, &x, &y, &host);
        let add = Kernel::new(ctx, "add", &y, &z, Some(&r));
        let relu = Kernel::new(ctx, "relu", &z, &y, None);
        let floors = [
            Kernel::new(ctx, "sum", &x, &z, None),
            Kernel::new(ctx, "sum2", &x, &z, Some(&dy)),
            Kernel::new(ctx, "add", &x, &z, Some(&dy)),
        ];
        ctx.synchronize().expect("sync");
        Self {
            ctx: ctx.clone(),
            shape: shape.to_vec(),
            format,
            x,
            y,
            dy,
            r,
            z,
            train,
            eval,
            fused,
            grads,
            copy,
            add,
            relu,
            floors,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> usize {
        self.numel() * 4
    }

    pub fn name(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        match self.format {
            MemoryFormat::ChannelsFirst => dims.join("x"),
            MemoryFormat::ChannelsLast => format!("{} (channels-last)", dims.join("x")),
        }
    }

    /// Runs `op` to GPU completion.
    pub fn run(&mut self, op: Op) {
        let (x, y, r) = (&self.x, &self.y, &self.r);
        match op {
            Op::Copy => self.copy.run(&self.ctx),
            Op::Train => each!(&mut self.train, bn => bn.forward_into(x, y).expect("forward")),
            Op::Eval => each!(&mut self.eval, bn => bn.forward_into(x, y).expect("forward")),
            Op::EvalRelu => each!(&mut self.eval, bn =>
                bn.forward_fused_into(x, Epilogue::relu(), y).expect("forward")),
            Op::TrainAddRelu => each!(&mut self.fused, bn =>
                bn.forward_fused_into(x, Epilogue::relu().with_residual(r), y).expect("forward")),
            Op::TrainThenAddRelu => {
                each!(&mut self.fused, bn => bn.forward_into(x, y).expect("forward"));
                let mut enc = self
                    .ctx
                    .device()
                    .create_command_encoder(&Default::default());
                self.add.record(&mut enc);
                self.relu.record(&mut enc);
                self.ctx.queue().submit([enc.finish()]);
            }
            Op::TrainFloor | Op::BackwardFloor => {
                let mut enc = self
                    .ctx
                    .device()
                    .create_command_encoder(&Default::default());
                if op == Op::TrainFloor {
                    self.floors[0].record(&mut enc);
                    self.copy.record(&mut enc);
                } else {
                    self.floors[1].record(&mut enc);
                    self.floors[2].record(&mut enc);
                }
                self.ctx.queue().submit([enc.finish()]);
            }
            Op::Backward => {
                let (dy, g) = (&self.dy, &mut self.grads);
                each!(&mut self.train, bn => bn.backward_into(dy, g).expect("backward"));
            }
        }
        self.ctx.synchronize().expect("sync");
        let _ = &self.z;
    }

    /// Records `op` (copy, train, eval or backward) into `encoder`
    /// without submitting it.
    pub fn record(&mut self, op: Op, encoder: &mut wgpu::CommandEncoder) {
        let (x, y) = (&self.x, &self.y);
        match op {
            Op::Copy => self.copy.record(encoder),
            Op::Train => each!(&mut self.train, bn =>
                bn.encode_forward_into(encoder, x, y).expect("forward")),
            Op::Eval => each!(&mut self.eval, bn =>
                bn.encode_forward_into(encoder, x, y).expect("forward")),
            Op::Backward => {
                let (dy, g) = (&self.dy, &mut self.grads);
                each!(&mut self.train, bn =>
                    bn.encode_backward_into(encoder, dy, g).expect("backward"));
            }
            _ => unreachable!("record: {op:?} is not recorded alone"),
        }
    }

    pub fn time(&mut self, op: Op, runs: usize) -> Duration {
        median(runs, || self.run(op))
    }
}

/// The copy baseline: of the fixture's own `x -> y` and two fresh staggered
/// pairs, the placement whose copy is fastest (the copy of a 64 MiB tensor
/// on lavapipe lands at ~29 ms or ~45 ms depending on where its pages
/// fall). Taking the fastest makes every "x copy" ratio larger, never
/// smaller.
fn fastest_copy(ctx: &GpuContext, shape: &[usize], x: &Tensor, y: &Tensor, host: &[f32]) -> Kernel {
    let mut kept: Vec<[Tensor; 2]> = Vec::new();
    let mut candidates = vec![Kernel::new(ctx, "copy", x, y, None)];
    for _ in 0..2 {
        let pair = staggered(ctx, shape, MemoryFormat::ChannelsFirst, [Some(host), None]);
        candidates.push(Kernel::new(ctx, "copy", &pair[0], &pair[1], None));
        kept.push(pair);
    }
    let mut best: Option<(Duration, Kernel)> = None;
    for c in candidates {
        let t = median(5, || {
            c.run(ctx);
            ctx.synchronize().expect("sync");
        });
        if best.as_ref().is_none_or(|(b, _)| t < *b) {
            best = Some((t, c));
        }
    }
    // The kernels hold their buffers through their bind groups.
    drop(kept);
    best.expect("a candidate").1
}
