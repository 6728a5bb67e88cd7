// Shared by every batch-norm kernel. Prepended (after dtype_*.wgsl, which
// defines `elem`, the tensors' storage type) to each kernel file at
// pipeline creation. All shapes and scalars arrive in one uniform buffer, so
// one pipeline serves every shape. Binding indices have one role each
// across all kernel files (`Binding` in src/gpu/launch.rs):
//   0 params   1 x    2 dy        3 terms      4 partials   5 state
//   6 out      7 head 8 grad_weight 9 grad_bias 10 moments_out 11 merged
//   12 residual 13 y  14 heads
// The constants below are checked against the Rust side by a unit test.

struct Params {
    n: u32,                // rows N (of this chunk in chunk dispatches)
    c: u32,                // channels C
    l: u32,                // length L (1 for (N, C) inputs)
    count: u32,            // values per channel over the whole tensor, N * L
    numel: u32,            // elements of this chunk
    lanes_per_group: u32,  // reduction lanes per workgroup (power of two)
    threads_per_lane: u32, // reduction threads per lane; lanes_per_group * threads_per_lane == WG
    tiles: u32,            // workgroups side by side over the lanes
    segments: u32,         // reduction segments along each lane in this chunk
    seg_len: u32,          // units per segment
    flags: u32,            // FLAG_* bits
    partial_base: u32,     // this chunk's first row of partial states
    eps: f32,
    momentum: f32,         // running-statistics factor for this step
    lead: u32,             // elements between the start of this chunk's first row and the chunk
    subgroups: u32,        // subgroups per workgroup for reduce_subgroup.wgsl, 0: tree only
    stride: u32,           // vec4s between the vec4s of one elementwise invocation (whole rows, or runs)
    units: u32,            // reduction units (values, vec4s along L, or rows) per lane in this chunk
    partial_rows: u32,     // rows of partial states the finalize steps merge
    column_lanes: u32,    // lanes per workgroup of the column kernels
    folds: u32,           // virtual channels per channel in the partial states (rows reductions of odd C or short odd L)
    rescue_flag: u32,     // vec4 index in `partials` of the rescue flag (rescue_flag.wgsl; cleared before each backward)
    rescue_windows: u32,  // windows of this chunk's careful gradient walk per channel (grads_careful.wgsl)
    rescue_window: u32,   // values of a channel per window of that walk
}

const FLAG_UPDATE_RUNNING: u32 = 1u;
const FLAG_AFFINE: u32 = 2u;
const FLAG_BATCH_STATS: u32 = 4u;
const FLAG_FROM_STATE: u32 = 8u;
const FLAG_GATHERED_HEADS: u32 = 16u; // `head` holds each channel's first value at [ch] (heads.wgsl)
const FLAG_PAIRED_LANES: u32 = 32u;
const FLAG_FIRST_CHUNK: u32 = 64u; // the first chunk of a tensor (grads_rescue)

// Per-channel terms (the `terms` buffer), written by finalize.wgsl and read
// by the other kernels,
// as sections of CP = C rounded up to a multiple of 4 values each, so four
// consecutive channels' term is one vec4.
const TERM_SHIFT: u32 = 0u;   // shift (the channel's first value)
const TERM_MEAN: u32 = 1u;    // mean - shift
const TERM_INVSTD: u32 = 2u;  // 1 / sqrt(var + eps)
const TERM_SCALE: u32 = 3u;   // weight * invstd
const TERM_OFFSET: u32 = 4u;  // bias - (mean - shift) * scale
const TERM_DX_SLOPE: u32 = 5u; // -invstd * mean(dy * x_hat) (0 in eval)
const TERM_DX_INTERCEPT: u32 = 6u; // -mean(dy) - slope * (mean - shift), or -mean(dy) where the line goes through the mean (dx_line4; 0 in eval): dx = scale * (dy + (slope * (x - dx_shift) + intercept))
const TERM_DX_SHIFT: u32 = 7u; // the shift of grad_input's line (dx_line4): shift, or shift + mean where slope * mean overflows; NaN from grads_finalize marks sums for grads_rescue
const TERMS: u32 = 8u;

// After the TERMS sections, the same terms again one vec4 per channel, for
// kernels where a vec4 of the tensor lies within one channel (one load
// instead of one per term): CP vec4s (shift, scale, offset, 0) for
// normalize, then CP vec4s (dx_shift, scale, slope, intercept) for grad_input.
const PACKED_NORMALIZE: u32 = 0u;
const PACKED_GRAD: u32 = 1u;

// Index, in vec4s, of channel ch's packed terms of kind `kind`.
fn packed_index(kind: u32, ch: u32) -> u32 {
    return (TERMS + 4u * kind) * padded_channels() / 4u + ch;
}

fn padded_channels() -> u32 {
    return (P().c + 3u) / 4u * 4u;
}

// Component k of v without dynamic vector indexing (which some compilers
// lower to memory) and without arithmetic that would mix in NaNs.
fn pick(v: vec4<f32>, k: u32) -> f32 {
    return select(select(v.x, v.y, k == 1u), select(v.z, v.w, k == 3u), k >= 2u);
}

// Workgroup size of every kernel: within WebGPU's and GL's minimum limits.
const WG: u32 = 256u;

// Two slots, of which the kernels read the first through an index the
// driver cannot fold (P): lavapipe of Mesa 22 inlines uniform values that
// loop and branch conditions read at constant offsets and then compiles the
// shader again at every dispatch (15-40 ms each) for as long as that
// shrinks it by half, which small shapes do.
struct ParamsSlot {
    @size(96) p: Params,
}
@group(0) @binding(0) var<uniform> params: array<ParamsSlot, 2>;

// This dispatch's parameters: slot 0 (FLAG_* bits stay below 2^31, so
// the index is 0).
fn P() -> Params {
    return params[params[0].p.flags >> 31u].p;
}

// Rows the column kernels' *_regs64 and *_regs256 entry points
// (columns.wgsl, columns4.wgsl) keep in registers at most; the host
// (`ColumnRegs`) picks them.
const REG_ROWS_64: u32 = 64u;
const REG_ROWS_256: u32 = 256u;
// Rows of the *_regs16_lanes entry points (columns4_lanes.wgsl): WGSL
// zero-fills a function's arrays, and a CPU adapter pays for every byte
// (ColumnRegs::Rows16Lanes).
const REG_ROWS_16: u32 = 16u;
// Consecutive four-channel lanes each thread of the *_regs64_lanes and
// *_regs16_lanes entry points takes (columns4_lanes.wgsl; the host's
// ColumnRegs::lanes_per_thread).
const REG_LANES_64: u32 = 4u;

// Rows between the barriers of a sweep. A CPU adapter runs a workgroup's
// invocations a SIMD group at a time, each group through its whole loop
// until a barrier; where every thread walks its lane's rows a whole row
// apart, one group then strides through every row before the next group
// reads the neighbouring bytes of the same rows. A barrier every
// SWEEP_ROWS rows makes the groups take turns over those rows, so the
// workgroup reads each row's stretch front to back (SWEEP_ROWS streams
// that the prefetchers follow). Only the *_sweep entry points, which only
// CPU adapters take (the column kernels' registers, the rows reductions
// with per-thread partials), have such barriers; their loops stay uniform
// across the workgroup. (Between 2 and 32 rows made no difference on
// lavapipe.)
const SWEEP_ROWS: u32 = 8u;

// Whether row r of a sweep closes a turn (the loops call
// workgroupBarrier() there).
fn sweep_turn(r: u32) -> bool {
    return r % SWEEP_ROWS == SWEEP_ROWS - 1u;
}

// The input and the output gradient, bound as vec4 arrays (tensor buffers
// are padded to 16 bytes); unused by the finalize steps.
@group(0) @binding(1) var<storage, read> x4: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> dy4: array<vec4<elem>>;

// Value e of x, and of dy: one component of x4 and dy4 (a second
// declaration of their bindings as single values would put two buffers on
// one register in HLSL, whose writer keeps unused globals).
fn x_at(e: u32) -> f32 {
    return f32(x4[e / 4u][e % 4u]);
}

fn dy_at(e: u32) -> f32 {
    return f32(dy4[e / 4u][e % 4u]);
}

// Tensors larger than one storage binding are processed in chunks: element
// ranges that start on an aligned offset. A chunk's Params describe the rows
// it overlaps (n, units), its length (numel), where it starts inside its
// first row (lead) and its first row of partial states (partial_base);
// values of a row outside the chunk belong to the neighbouring chunk. The
// finalize steps see the totals (count, partial_rows).
// Without chunking, lead = 0 and numel covers the whole tensor.

// Workgroups are dispatched on a 2-D grid when one dimension is not enough
// (the host keeps each dispatch within the device's grid limits, chunking
// the tensor where needed).
fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// The builtins every entry point takes.
struct Ids {
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

// The workgroup's index on the (possibly 2-D) grid.
fn group_index(ids: Ids) -> u32 {
    return linear_group(ids.wid, ids.nwg);
}

// The column kernels' lane of the invocation (the first of its four in
// the *_regs64_lanes and *_regs16_lanes kernels, columns4_lanes.wgsl):
// P.column_lanes
// threads per workgroup (fewer than WG where a small input should still
// spread over several workgroups), which is the COLUMN_WG the column
// entry points' workgroups have (columns4.wgsl); an invocation past them
// would get an index past every lane.
fn column_lane(ids: Ids) -> u32 {
    if (ids.li >= P().column_lanes) {
        return 0xffffffffu;
    }
    return group_index(ids) * P().column_lanes + ids.li;
}

// The invocation's index over the whole grid: one per channel in the
// finalize kernels, one per slab in the elementwise kernels.
fn global_index(ids: Ids) -> u32 {
    return group_index(ids) * WG + ids.li;
}


// The input's first row (n = 0), bound by the kernels that need the shift;
// with FLAG_GATHERED_HEADS, each channel's first value (heads.wgsl).
@group(0) @binding(7) var<storage, read> head: array<elem>;

// Bit test, so no compiler may assume finite math away.
fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

fn finite4(v: vec4<f32>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(v) & vec4<u32>(0x7f800000u)) != vec4<u32>(0x7f800000u);
}

// A running statistic's update (1 - m) * old + m * batch (update_running
// in finalize.wgsl): `near`'s form old + m * diff, diff = batch - old
// computed by the caller, where it and old are finite and m != 1, else
// PyTorch's form.
fn running_blend(m: f32, old: vec4<f32>, diff: vec4<f32>, batch: vec4<f32>) -> vec4<f32> {
    let near = old + m * diff;
    let torch = (1.0 - m) * old + m * batch;
    return select(torch, near, finite4(old) & finite4(near) & vec4<bool>(m != 1.0));
}

// (x - shift) * a + b. Subtracting the shift first keeps data such as
// 1e4 + noise exact to f32 rounding; where x - shift overflows f32 (values
// of both signs near its limit, far from the shift but not from the mean)
// it is x * a + (b - shift * a) instead.
fn shifted_affine4(x: vec4<f32>, shift: vec4<f32>, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let d = x - shift;
    return select(d * a + b, x * a + (b - shift * a), !finite4(d) & finite4(x));
}

// dx = scale * (dy + (slope * (x - shift) + intercept)) (the grad_input
// terms, grad_input_line in finalize.wgsl; shifted_affine4 where x - shift
// overflows): the line, -mean(dy) - x_hat * mean(dy * x_hat), is taken
// whole before dy joins it, since its two parts may be far larger than
// their sum where dy is huge (dy + intercept alone overflowed f32 for dy
// of 3e38 whose dx was 2.4e38). In eval (no batch statistics) dx = scale * dy = dy * weight *
// invstd alone, x unused: a NaN or infinite x leaves dx finite there, as in
// PyTorch's eval backward.
fn grad_input4(x: vec4<f32>, dy: vec4<f32>, shift: vec4<f32>, scale: vec4<f32>, slope: vec4<f32>, intercept: vec4<f32>) -> vec4<f32> {
    if ((P().flags & FLAG_BATCH_STATS) == 0u) {
        return scale * dy;
    }
    return scale * (dy + shifted_affine4(x, shift, slope, intercept));
}

// grad_input's line, -mean(dy) - x_hat * mean(dy * x_hat) =
// slope * (x - shift) + intercept with slope = -invstd * mean(dy * x_hat),
// intercept = -mean(dy) - slope * mean (mean relative to the shift): 0 in
// eval. The line is taken before the multiplication by scale: slope stays
// a normal f32 for every std below 2^126, where scale * invstd (about
// 1 / var) would fall below f32's normal range from std ~ 1e19 on and be
// flushed to zero on adapters that flush subnormals. Where the intercept
// is not finite (slope * mean past f32's range: mean(dy * x_hat) near its
// limit, a shift far from the mean in stds; or infinite means, of an
// infinite dy) the line goes through the mean instead: shift + mean,
// intercept -mean(dy), so that each value's term is -x_hat * mean(dy *
// x_hat) as in the reference (inf - inf would make every value NaN).
struct DxLine4 {
    shift: vec4<f32>,
    slope: vec4<f32>,
    intercept: vec4<f32>,
}

fn dx_line4(shift: vec4<f32>, mean: vec4<f32>, invstd: vec4<f32>, mdy: vec4<f32>, mdyx: vec4<f32>) -> DxLine4 {
    if ((P().flags & FLAG_BATCH_STATS) == 0u) {
        return DxLine4(shift, vec4<f32>(0.0), vec4<f32>(0.0));
    }
    let slope = -invstd * mdyx;
    let intercept = -mdy - slope * mean;
    let far = !finite4(intercept);
    return DxLine4(select(shift, shift + mean, far), slope, select(intercept, -mdy, far));
}

// x_hat = ((x - shift) - mean) * invstd (mean relative to the shift), as
// (x - (shift + mean)) * invstd where x - shift overflows.
fn x_hat4(x: vec4<f32>, shift: vec4<f32>, mean: vec4<f32>, invstd: vec4<f32>) -> vec4<f32> {
    let d = x - shift;
    return select((d - mean) * invstd, (x - (shift + mean)) * invstd, !finite4(d) & finite4(x));
}

// Walks a channel's values in units of `width` consecutive elements along L
// (width 1, or 4 for the vec4 kernels): unit j is row n = j / U, unit u =
// j % U with U = L / width. Stepping by a fixed stride needs no division.
struct Cursor {
    n: u32,
    u: u32,
    step_n: u32,
    step_u: u32,
    units: u32,
}

fn cursor(j: u32, stride: u32, width: u32) -> Cursor {
    return cursor_of(j, stride, P().l / width);
}

// The same with `units` units per row.
fn cursor_of(j: u32, stride: u32, units: u32) -> Cursor {
    var c: Cursor;
    c.units = units;
    c.n = j / c.units;
    c.u = j - c.n * c.units;
    c.step_n = stride / c.units;
    c.step_u = stride - c.step_n * c.units;
    return c;
}

fn advance(c: ptr<function, Cursor>) {
    (*c).n += (*c).step_n;
    (*c).u += (*c).step_u;
    if ((*c).u >= (*c).units) {
        (*c).u -= (*c).units;
        (*c).n += 1u;
    }
}

// Element offset of the cursor's unit for channel ch, relative to the chunk
// binding; values before the chunk wrap around to huge offsets, so one
// `< P.numel` test rejects both ends.
fn chunk_offset(c: Cursor, ch: u32, width: u32) -> u32 {
    return (c.n * P().c + ch) * P().l + c.u * width - P().lead;
}
