//! Compute pipelines and their dispatch: shader sources, the uniform block,
//! the reduction plan, and helpers that record passes into an encoder.

use crate::semantics::Layout;

/// Threads per workgroup in every kernel (`WG` in `shaders/common.wgsl`).
pub(crate) const WG: u32 = 256;
/// A reduction pass on a GPU aims for about this many workgroups.
const GPU_TARGET_GROUPS: usize = 512;
/// A reduction thread folds at least this many values before merging.
const MIN_VALUES_PER_THREAD: usize = 8;
/// Upper bound on reduction segments per channel (finalize merges them serially).
const MAX_SEGMENTS: usize = 1024;

/// WGSL sources: the shared prelude and one file per kernel family.
pub mod sources {
    /// Uniform block and helpers prepended to every kernel file.
    pub const COMMON: &str = include_str!("../shaders/common.wgsl");
    /// Per-channel partial reductions (moments and gradient sums).
    pub const REDUCE: &str = include_str!("../shaders/reduce.wgsl");
    /// Per-channel finalize steps.
    pub const FINALIZE: &str = include_str!("../shaders/finalize.wgsl");
    /// Normalize and grad-input elementwise passes.
    pub const ELEMENTWISE: &str = include_str!("../shaders/elementwise.wgsl");
    /// The vec4 copy kernel used as the benchmarks' bandwidth baseline.
    pub const COPY: &str = include_str!("../shaders/copy.wgsl");
    /// Storage-type preamble of the f32 pipeline set.
    pub const DTYPE_F32: &str = include_str!("../shaders/dtype_f32.wgsl");
    /// Storage-type preamble of the f16 pipeline set.
    pub const DTYPE_F16: &str = include_str!("../shaders/dtype_f16.wgsl");
    /// `enable f16;`, first in f16 modules.
    pub const ENABLE_F16: &str = include_str!("../shaders/enable_f16.wgsl");
    /// Reduction entry points combining threads with a shared-memory tree.
    pub const REDUCE_TREE: &str = include_str!("../shaders/reduce_tree.wgsl");
    /// Reduction entry points combining threads with subgroup operations.
    pub const REDUCE_SUBGROUP: &str = include_str!("../shaders/reduce_subgroup.wgsl");

    /// The complete WGSL module of kernel family `body` for `dtype`:
    /// `enable f16;` where needed, the dtype preamble, the shared prelude, then the family's
    /// files (the reduction family takes its entry points from
    /// `reduce_subgroup.wgsl` or `reduce_tree.wgsl`; wgpu's WGSL front end
    /// gates subgroup operations on the device feature, with no `enable`).
    pub fn module(dtype: crate::DType, subgroups: bool, body: &str) -> String {
        let mut src = String::new();
        if dtype == crate::DType::F16 {
            src.push_str(ENABLE_F16);
        }
        src.push_str(match dtype {
            crate::DType::F32 => DTYPE_F32,
            crate::DType::F16 => DTYPE_F16,
        });
        src.push_str(COMMON);
        src.push_str(body);
        if body == REDUCE {
            src.push_str(if subgroups {
                REDUCE_SUBGROUP
            } else {
                REDUCE_TREE
            });
        }
        src
    }

    /// `(name, dtype, subgroups, complete WGSL module)` for every shader
    /// the crate compiles, plus the copy baseline; used by the naga test.
    pub fn modules() -> Vec<(&'static str, Option<crate::DType>, bool, String)> {
        let mut all = Vec::new();
        for dtype in [crate::DType::F32, crate::DType::F16] {
            for (name, body) in [("finalize", FINALIZE), ("elementwise", ELEMENTWISE)] {
                all.push((name, Some(dtype), false, module(dtype, false, body)));
            }
            for subgroups in [false, true] {
                all.push((
                    "reduce",
                    Some(dtype),
                    subgroups,
                    module(dtype, subgroups, REDUCE),
                ));
            }
        }
        all.push(("copy", None, false, COPY.to_string()));
        all
    }
}

/// The uniform block shared by all kernels (`Params` in `common.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub c: u32,
    pub l: u32,
    pub m: u32,
    pub numel: u32,
    pub cpw: u32,
    pub tpc: u32,
    pub tiles: u32,
    pub segments: u32,
    pub seg_len: u32,
    pub flags: u32,
    pub seg_base: u32,
    pub eps: f32,
    pub momentum: f32,
    pub lead: u32,
    pub subgroups: u32,
    pub stride: u32,
    pub pad: [u32; 3],
}

pub(crate) const FLAG_UPDATE_RUNNING: u32 = 1;
pub(crate) const FLAG_AFFINE: u32 = 2;
pub(crate) const FLAG_BATCH_STATS: u32 = 4;
/// Per-channel terms the finalize kernels write (`TERMS` in `common.wgsl`).
pub(crate) const TERMS: usize = 7;
/// f32 values per (padded) channel in the terms buffer: the TERMS sections
/// and two packed vec4s (`PACKED_*` in `common.wgsl`).
pub(crate) const TERM_FLOATS: usize = TERMS + 8;

/// How the elementwise kernels walk a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// L % 4 == 0: each vec4 lies within one channel.
    Planes,
    /// (N, C) with C % 4 == 0: each vec4 is four consecutive channels.
    Rows,
    /// Anything else: each value's channel looked up.
    General,
}

/// How a per-channel reduction is split over workgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReducePlan {
    pub cpw: u32,
    pub tpc: u32,
    pub tiles: u32,
    pub segments: u32,
    pub seg_len: u32,
}

impl ReducePlan {
    /// Workgroups of the partial pass.
    pub fn groups(&self) -> u32 {
        self.tiles * self.segments
    }
}

/// Workgroups a reduction pass aims for on an adapter of `device_type`:
/// enough to fill a GPU; on CPU adapters (lavapipe, WARP), which run a few
/// workgroups at a time and pay for every barrier and every extra partial,
/// a few per CPU thread (measured on lavapipe: 16 groups instead of 512 made
/// training forward about 1.2x faster).
pub(crate) fn target_groups(device_type: Option<wgpu::DeviceType>) -> usize {
    match device_type {
        Some(wgpu::DeviceType::Cpu) => std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .saturating_mul(4)
            .clamp(16, GPU_TARGET_GROUPS),
        _ => GPU_TARGET_GROUPS,
    }
}

/// Chooses the reduction split for a layout, counting each channel's values
/// in units of `width` consecutive elements along L, with at most
/// `max_groups` workgroups and about `target` of them. With `quads` ((N, C)
/// inputs, C % 4 == 0) a reduction thread takes four channels, and `cpw`
/// counts quads.
pub(crate) fn plan_reduce(
    layout: &Layout,
    width: usize,
    quads: bool,
    max_groups: usize,
    target: usize,
) -> ReducePlan {
    let wg = WG as usize;
    let lanes = if quads { layout.c / 4 } else { layout.c };
    let cpw = if layout.l == 1 {
        lanes.next_power_of_two().min(64)
    } else {
        1
    };
    let tpc = wg / cpw;
    let tiles = lanes.div_ceil(cpw);
    let m = (layout.per_channel() / width).max(1);
    let max_segments = m
        .div_ceil(tpc * MIN_VALUES_PER_THREAD)
        .clamp(1, MAX_SEGMENTS);
    let segments = target
        .max(1)
        .div_ceil(tiles)
        .clamp(1, max_segments)
        .min((max_groups / tiles).max(1));
    let seg_len = m.div_ceil(segments);
    let segments = m.div_ceil(seg_len);
    ReducePlan {
        cpw: cpw as u32,
        tpc: tpc as u32,
        tiles: tiles as u32,
        segments: segments as u32,
        seg_len: seg_len as u32,
    }
}

/// One chunk of a tensor: an element range small enough for one storage
/// binding, starting on an aligned offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// First element of the chunk.
    pub start: usize,
    /// Elements in the chunk.
    pub count: usize,
    /// Elements between the start of the chunk's first row and `start`.
    pub lead: usize,
    /// The rows the chunk overlaps, viewed as a `(rows, C, L)` tensor.
    pub layout: Layout,
    /// Reduction split over those rows.
    pub reduce: ReducePlan,
    /// Index of the chunk's first row of partials (one row per segment,
    /// or per segment and thread with per-thread partials).
    pub seg_base: u32,
}

/// How one op over a whole tensor is dispatched: chunks within
/// `max_storage_buffer_binding_size`, whose partials the finalize steps
/// merge in segment order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecPlan {
    pub layout: Layout,
    pub chunks: Vec<Chunk>,
    pub total_segments: u32,
    /// Elements of the first row that are bound for the per-channel shift.
    pub head: usize,
    /// Reduction unit: 4 when every vec4 lies within one channel (L % 4 == 0).
    pub width: usize,
    /// How the elementwise kernels walk the layout.
    pub walk: Walk,
    /// Reduction threads write their own partials (`THREAD_PARTIALS`):
    /// each segment has `tpc` rows of partials.
    pub thread_partials: bool,
}

/// Splits a non-empty `layout` into chunks whose bytes fit `max_binding`
/// and start at multiples of `align` bytes.
pub(crate) fn plan_exec(
    layout: &Layout,
    elem_size: usize,
    max_binding: u64,
    align: u64,
    max_dim: u32,
    target: usize,
    thread_partials: bool,
) -> Result<ExecPlan, String> {
    let width = if layout.l.is_multiple_of(4) { 4 } else { 1 };
    let walk = if layout.l.is_multiple_of(4) {
        Walk::Planes
    } else if layout.l == 1 && layout.c.is_multiple_of(4) {
        Walk::Rows
    } else {
        Walk::General
    };
    let max_groups = (u64::from(max_dim) * u64::from(max_dim)).min(u64::from(u32::MAX)) as usize;
    let quads = walk == Walk::Rows;
    let tiles = plan_reduce(layout, width, quads, max_groups, target).tiles as usize;
    if tiles > max_groups {
        return Err(format!(
            "{} channels need {tiles} workgroups; the device dispatches at most {max_groups}",
            layout.c
        ));
    }
    let numel = layout.numel();
    let row = layout.c * layout.l;
    let align_elems = align.max(16) as usize / elem_size;
    // Bound by the binding size and by the elementwise grid (4 values per thread).
    let max_elems =
        (max_binding as usize / elem_size).min(max_groups.saturating_mul(WG as usize * 4));
    let max_elems = max_elems / align_elems * align_elems;
    if max_elems == 0 {
        return Err(format!(
            "storage bindings of {max_binding} bytes are too small"
        ));
    }
    let chunk_elems = if numel <= max_elems { numel } else { max_elems };
    let mut chunks = Vec::new();
    let mut seg_base = 0u32;
    let mut start = 0;
    while start < numel {
        let count = chunk_elems.min(numel - start);
        let row0 = start / row;
        let row1 = (start + count).div_ceil(row);
        let sub = Layout {
            n: row1 - row0,
            ..*layout
        };
        let reduce = plan_reduce(&sub, width, quads, max_groups, target);
        chunks.push(Chunk {
            start,
            count,
            lead: start - row0 * row,
            layout: sub,
            reduce,
            seg_base,
        });
        seg_base = seg_base
            .checked_add(reduce.segments)
            .ok_or_else(|| "too many reduction segments".to_string())?;
        start += count;
    }
    // Per-thread partials: tpc rows of partials per segment, taken only
    // where they stay small next to the tensor (they are written and read
    // once more).
    let thread_rows: u64 = chunks
        .iter()
        .map(|c| u64::from(c.reduce.segments) * u64::from(c.reduce.tpc))
        .sum();
    let thread_bytes = thread_rows * layout.c as u64 * 16;
    let thread_partials = thread_partials
        && thread_rows <= u64::from(u32::MAX)
        && thread_bytes <= max_binding
        && thread_bytes <= ((numel * elem_size) as u64 / 4).max(1 << 20);
    if thread_partials {
        seg_base = 0;
        for c in &mut chunks {
            c.seg_base = seg_base;
            seg_base += c.reduce.segments * c.reduce.tpc;
        }
    }
    Ok(ExecPlan {
        layout: *layout,
        chunks,
        total_segments: seg_base,
        head: row.min(max_elems),
        width,
        walk,
        thread_partials,
    })
}

impl ExecPlan {
    /// Params of chunk `k` (the reduction and elementwise dispatches).
    pub fn chunk_params(&self, k: usize, flags: u32, eps: f32, momentum: f32) -> Params {
        let ch = &self.chunks[k];
        Params {
            seg_base: ch.seg_base,
            numel: ch.count as u32,
            lead: ch.lead as u32,
            m: (ch.layout.per_channel() / self.width) as u32,
            stride: slab_stride(ch.count, self.layout.row()) as u32,
            ..Params::new(&ch.layout, &ch.reduce, flags, eps, momentum)
        }
    }

    /// Params of the per-channel finalize steps: totals over all chunks.
    pub fn total_params(&self, flags: u32, eps: f32, momentum: f32) -> Params {
        let reduce = ReducePlan {
            segments: self.total_segments,
            ..self.chunks.first().map(|c| c.reduce).unwrap_or(ReducePlan {
                cpw: 1,
                tpc: WG,
                tiles: 0,
                segments: 0,
                seg_len: 0,
            })
        };
        Params::new(&self.layout, &reduce, flags, eps, momentum)
    }

    /// Partial states written by all chunks.
    pub fn partial_count(&self) -> usize {
        self.total_segments as usize * self.layout.c
    }
}

impl Params {
    /// The uniform block for `layout` and `plan`.
    pub fn new(layout: &Layout, plan: &ReducePlan, flags: u32, eps: f32, momentum: f32) -> Self {
        Self {
            n: layout.n as u32,
            c: layout.c as u32,
            l: layout.l as u32,
            m: layout.per_channel() as u32,
            numel: layout.numel() as u32,
            cpw: plan.cpw,
            tpc: plan.tpc,
            tiles: plan.tiles,
            segments: plan.segments,
            seg_len: plan.seg_len,
            flags,
            eps,
            momentum,
            ..Default::default()
        }
    }
}

/// Every compute pipeline, compiled once per [`GpuContext`](crate::GpuContext):
/// the f32 set, and the f16 set when the device has `SHADER_F16`.
pub(crate) struct Kernels {
    pub f32: KernelSet,
    pub f16: Option<KernelSet>,
    /// Subgroups per workgroup when the reductions use subgroup operations
    /// (the device has `SUBGROUP` and a fixed subgroup size dividing `WG`).
    pub subgroups: Option<u32>,
}

impl Kernels {
    /// Compiles the pipeline sets the device supports.
    pub fn new(
        device: &wgpu::Device,
        info: Option<&wgpu::AdapterInfo>,
        thread_partials: bool,
    ) -> Self {
        let subgroups = info.and_then(|i| {
            let fixed = i.subgroup_min_size == i.subgroup_max_size && i.subgroup_min_size > 0;
            let usable = device.features().contains(wgpu::Features::SUBGROUP)
                && fixed
                && WG.is_multiple_of(i.subgroup_min_size);
            usable.then_some(WG / i.subgroup_min_size.max(1))
        });
        let sg = subgroups.is_some();
        let f16 = device
            .features()
            .contains(wgpu::Features::SHADER_F16)
            .then(|| KernelSet::new(device, crate::DType::F16, sg, thread_partials));
        Self {
            f32: KernelSet::new(device, crate::DType::F32, sg, thread_partials),
            f16,
            subgroups,
        }
    }

    /// Whether reductions may write per-thread partials (the sets were
    /// built with them: CPU adapters by default, see
    /// `ContextOptions::thread_partials`).
    pub fn thread_partials(&self) -> bool {
        self.f32.reduce_threads.is_some()
    }

    /// The pipeline set for tensors of `dtype`.
    pub fn set(&self, dtype: crate::DType) -> crate::Result<&KernelSet> {
        match dtype {
            crate::DType::F32 => Ok(&self.f32),
            crate::DType::F16 => self.f16.as_ref().ok_or(crate::Error::Unsupported(
                "f16 tensors need the adapter's SHADER_F16 feature, which this device lacks",
            )),
        }
    }
}

/// The partial-reduction pipelines of one storage type and one way of
/// combining a workgroup's threads (`THREAD_PARTIALS` in `reduce.wgsl`).
pub(crate) struct ReducePipelines {
    pub moments_partial: wgpu::ComputePipeline,
    pub moments_partial4: wgpu::ComputePipeline,
    pub grads_partial: wgpu::ComputePipeline,
    pub grads_partial4: wgpu::ComputePipeline,
    pub moments_partial_rows: wgpu::ComputePipeline,
    pub grads_partial_rows: wgpu::ComputePipeline,
}

impl ReducePipelines {
    fn new(device: &wgpu::Device, module: &wgpu::ShaderModule, tag: &str, threads: bool) -> Self {
        let constants = [("THREAD_PARTIALS", if threads { 1.0 } else { 0.0 })];
        let kind = if threads { "-threads" } else { "" };
        let p = |entry: &str| {
            pipeline(
                device,
                module,
                entry,
                &format!("batchnorm/{entry}{kind}-{tag}"),
                &constants,
            )
        };
        Self {
            moments_partial: p("moments_partial"),
            moments_partial4: p("moments_partial4"),
            grads_partial: p("grads_partial"),
            grads_partial4: p("grads_partial4"),
            moments_partial_rows: p("moments_partial_rows"),
            grads_partial_rows: p("grads_partial_rows"),
        }
    }
}

/// The pipelines of one storage type.
pub(crate) struct KernelSet {
    /// Reductions that merge each workgroup's threads.
    pub reduce: ReducePipelines,
    /// Reductions whose threads write their own partials (see
    /// [`Kernels::thread_partials`]).
    pub reduce_threads: Option<ReducePipelines>,
    pub moments_finalize: wgpu::ComputePipeline,
    pub eval_prepare: wgpu::ComputePipeline,
    pub grads_finalize: wgpu::ComputePipeline,
    pub grads_apply: wgpu::ComputePipeline,
    pub moments_export: wgpu::ComputePipeline,
    pub moments_apply: wgpu::ComputePipeline,
    pub normalize: wgpu::ComputePipeline,
    pub normalize_planes: wgpu::ComputePipeline,
    pub normalize_rows: wgpu::ComputePipeline,
    pub grad_input: wgpu::ComputePipeline,
    pub grad_input_planes: wgpu::ComputePipeline,
    pub grad_input_rows: wgpu::ComputePipeline,
}

/// One compute pipeline with the given pipeline-overridable constants.
fn pipeline(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    entry: &str,
    label: &str,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            ..Default::default()
        },
        cache: None,
    })
}

fn module(device: &wgpu::Device, label: &str, source: String) -> wgpu::ShaderModule {
    device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    })
}

impl KernelSet {
    /// Compiles every pipeline for `dtype` (errors surface through the
    /// caller's error scope).
    pub fn new(
        device: &wgpu::Device,
        dtype: crate::DType,
        subgroups: bool,
        thread_partials: bool,
    ) -> Self {
        use sources::{ELEMENTWISE, FINALIZE, REDUCE};
        let tag = match dtype {
            crate::DType::F32 => "f32",
            crate::DType::F16 => "f16",
        };
        let m = |family: &str, sg: bool, body: &str| {
            module(
                device,
                &format!("batchnorm/{family}-{tag}"),
                sources::module(dtype, sg, body),
            )
        };
        let reduce = m("reduce", subgroups, REDUCE);
        let finalize = m("finalize", false, FINALIZE);
        let elementwise = m("elementwise", false, ELEMENTWISE);
        let p = |m: &wgpu::ShaderModule, entry: &str| {
            pipeline(device, m, entry, &format!("batchnorm/{entry}-{tag}"), &[])
        };
        Self {
            reduce: ReducePipelines::new(device, &reduce, tag, false),
            reduce_threads: thread_partials
                .then(|| ReducePipelines::new(device, &reduce, tag, true)),
            moments_finalize: p(&finalize, "moments_finalize"),
            eval_prepare: p(&finalize, "eval_prepare"),
            grads_finalize: p(&finalize, "grads_finalize"),
            grads_apply: p(&finalize, "grads_apply"),
            moments_export: p(&finalize, "moments_export"),
            moments_apply: p(&finalize, "moments_apply"),
            normalize: p(&elementwise, "normalize"),
            normalize_planes: p(&elementwise, "normalize_planes"),
            normalize_rows: p(&elementwise, "normalize_rows"),
            grad_input: p(&elementwise, "grad_input"),
            grad_input_planes: p(&elementwise, "grad_input_planes"),
            grad_input_rows: p(&elementwise, "grad_input_rows"),
        }
    }
}

impl KernelSet {
    /// The reduction pipelines a plan uses.
    fn reductions(&self, plan: &ExecPlan) -> &ReducePipelines {
        match (&self.reduce_threads, plan.thread_partials) {
            (Some(threads), true) => threads,
            _ => &self.reduce,
        }
    }

    /// The partial-moments pipeline for a plan's layout.
    pub fn moments_partial_for(&self, plan: &ExecPlan) -> &wgpu::ComputePipeline {
        let r = self.reductions(plan);
        if plan.walk == Walk::Rows {
            &r.moments_partial_rows
        } else if plan.width == 4 {
            &r.moments_partial4
        } else {
            &r.moments_partial
        }
    }

    /// The partial-gradient pipeline for a plan's layout.
    pub fn grads_partial_for(&self, plan: &ExecPlan) -> &wgpu::ComputePipeline {
        let r = self.reductions(plan);
        if plan.walk == Walk::Rows {
            &r.grads_partial_rows
        } else if plan.width == 4 {
            &r.grads_partial4
        } else {
            &r.grads_partial
        }
    }

    /// The normalize pipeline for a plan's elementwise layout.
    pub fn normalize_for(&self, plan: &ExecPlan) -> &wgpu::ComputePipeline {
        match plan.walk {
            Walk::Planes => &self.normalize_planes,
            Walk::Rows => &self.normalize_rows,
            Walk::General => &self.normalize,
        }
    }

    /// The grad-input pipeline for a plan's elementwise layout.
    pub fn grad_input_for(&self, plan: &ExecPlan) -> &wgpu::ComputePipeline {
        match plan.walk {
            Walk::Planes => &self.grad_input_planes,
            Walk::Rows => &self.grad_input_rows,
            Walk::General => &self.grad_input,
        }
    }
}

/// Splits `groups` workgroups over a 2-D grid within the per-dimension
/// limit (`plan_exec` keeps every dispatch within `max_dim^2` groups).
pub(crate) fn grid(groups: u32, max_dim: u32) -> (u32, u32) {
    let groups = groups.max(1);
    let max_dim = max_dim.max(1);
    if groups <= max_dim {
        return (groups, 1);
    }
    let gy = groups.div_ceil(max_dim);
    (groups.div_ceil(gy), gy)
}

/// Records one dispatch of `pipeline` with the given bindings into `pass`.
pub(crate) fn dispatch(
    device: &wgpu::Device,
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    entries: &[(u32, wgpu::BindingResource<'_>)],
    groups: u32,
) {
    let layout = pipeline.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry<'_>> = entries
        .iter()
        .map(|(binding, resource)| wgpu::BindGroupEntry {
            binding: *binding,
            resource: resource.clone(),
        })
        .collect();
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &layout,
        entries: &entries,
    });
    let (gx, gy) = grid(groups, device.limits().max_compute_workgroups_per_dimension);
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, &bind_group, &[]);
    pass.dispatch_workgroups(gx, gy, 1);
}

/// Workgroups for one thread per channel.
pub(crate) fn channel_groups(c: usize) -> u32 {
    (c as u32).div_ceil(WG)
}

/// vec4s per elementwise invocation (`SLAB` in `elementwise.wgsl`).
pub(crate) const SLAB: usize = 4;

/// Distance in vec4s between the vec4s of one elementwise invocation over
/// `count` elements with rows of `row` elements: a whole number of rows
/// that is also a whole number of vec4s, so an invocation's vec4s share
/// their channels; at least a quarter of the vec4s, so `SLAB` of them
/// cover the range.
pub(crate) fn slab_stride(count: usize, row: usize) -> usize {
    let vec4s = count.div_ceil(4).max(1);
    let unit = match row % 4 {
        0 => row / 4,
        2 => row / 2,
        _ => row,
    }
    .max(1);
    if unit >= vec4s {
        return vec4s;
    }
    vec4s.div_ceil(SLAB).div_ceil(unit) * unit
}

/// Workgroups for the elementwise kernels over `count` elements with rows
/// of `row` elements (one invocation per vec4 of the first stride).
pub(crate) fn elementwise_groups(count: usize, row: usize) -> u32 {
    (slab_stride(count, row) as u32).div_ceil(WG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vec4 is covered exactly once and shares its channels with the
    /// first vec4 of its invocation.
    #[test]
    fn slab_stride_covers_each_vec4_once_within_its_channels() {
        for (count, row) in [
            (1, 1),
            (7, 3),
            (64, 64),
            (4096, 64),
            (1000, 10),
            (999, 333),
            (12, 6),
            (80, 20),
            (4 * 5 * 7, 7),
        ] {
            let stride = slab_stride(count, row);
            let vec4s = count.div_ceil(4);
            let mut seen = vec![0u8; vec4s];
            for i in 0..stride.min(vec4s) {
                for j in 0..SLAB {
                    let v = i + j * stride;
                    if v < vec4s {
                        seen[v] += 1;
                        if j > 0 {
                            assert_eq!((v * 4) % row, (i * 4) % row, "count {count} row {row}");
                        }
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "count {count} row {row}");
        }
    }
}
