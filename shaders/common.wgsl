// Shared by every batch-norm kernel. Prepended (after dtype_*.wgsl, which
// defines `elem`, the tensors' storage type) to each kernel file at
// pipeline creation. All shapes and scalars arrive in one uniform buffer, so
// one pipeline serves every shape.

struct Params {
    n: u32,          // batch size N
    c: u32,          // channels C
    l: u32,          // length L (1 for (N, C) inputs)
    m: u32,          // values per channel, N * L
    numel: u32,      // N * C * L
    cpw: u32,        // channels per reduction workgroup (power of two)
    tpc: u32,        // threads per channel in a reduction workgroup; cpw * tpc == WG
    tiles: u32,      // ceil(C / cpw)
    segments: u32,   // reduction segments along each channel (finalize: rows of partials)
    seg_len: u32,    // values per segment
    flags: u32,      // FLAG_* bits
    seg_base: u32,   // this dispatch's first row of partials
    eps: f32,
    momentum: f32,   // running-statistics factor for this step
    lead: u32,       // elements between the start of row `0` of this chunk and the chunk
    subgroups: u32,  // subgroups per workgroup for reduce_subgroup.wgsl, 0: tree only
    stride: u32,     // vec4s between the values of one elementwise invocation (whole rows)
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const FLAG_UPDATE_RUNNING: u32 = 1u;
const FLAG_AFFINE: u32 = 2u;
const FLAG_BATCH_STATS: u32 = 4u;

// Per-channel terms, written by finalize.wgsl and read by the other kernels,
// as sections of CP = C rounded up to a multiple of 4 values each, so four
// consecutive channels' term is one vec4.
const TERM_SHIFT: u32 = 0u;   // shift (the channel's first value)
const TERM_MEAN: u32 = 1u;    // mean - shift
const TERM_INVSTD: u32 = 2u;  // 1 / sqrt(var + eps)
const TERM_SCALE: u32 = 3u;   // weight * invstd
const TERM_OFFSET: u32 = 4u;  // bias - (mean - shift) * scale
const TERM_DX_SLOPE: u32 = 5u; // -scale * invstd * mean(dy * x_hat) (0 in eval)
const TERM_DX_INTERCEPT: u32 = 6u; // -scale * mean(dy) - slope * (mean - shift) (0 in eval)
const TERMS: u32 = 7u;

// After the TERMS sections, the same terms again one vec4 per channel, for
// kernels where a vec4 of the tensor lies within one channel (one load
// instead of one per term): CP vec4s (shift, scale, offset, 0) for
// normalize, then CP vec4s (shift, scale, slope, intercept) for grad_input.
const PACKED_NORMALIZE: u32 = 0u;
const PACKED_GRAD: u32 = 1u;

// Index, in vec4s, of channel ch's packed terms of kind `kind`.
fn packed_index(kind: u32, ch: u32) -> u32 {
    return (TERMS + 4u * kind) * padded_channels() / 4u + ch;
}

fn padded_channels() -> u32 {
    return (P.c + 3u) / 4u * 4u;
}

// Component k of v without dynamic vector indexing (which some compilers
// lower to memory) and without arithmetic that would mix in NaNs.
fn pick(v: vec4<f32>, k: u32) -> f32 {
    return select(select(v.x, v.y, k == 1u), select(v.z, v.w, k == 3u), k >= 2u);
}

// Workgroup size of every kernel: within WebGPU's and GL's minimum limits.
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> P: Params;

// Tensors larger than one storage binding are processed in chunks: element
// ranges that start on an aligned offset. A chunk's Params describe the rows
// it overlaps (n, m), its length (numel), where it starts inside its first
// row (lead) and its first partial (seg_base); values of a row outside the
// chunk belong to the neighbouring chunk. The finalize steps see the totals.
// Without chunking, lead = 0 and numel covers the whole tensor.

// Workgroups are dispatched on a 2-D grid when one dimension is not enough
// (the host keeps each dispatch within the device's grid limits, chunking
// the tensor where needed).
fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}


// The input's first row (n = 0), bound by the kernels that need the shift.
@group(0) @binding(7) var<storage, read> head: array<elem>;

// Shift of channel ch: its first value (n = 0, l = 0) when finite and bound.
// Statistics are accumulated on x - shift, which keeps data such as
// 1e4 + noise exact to f32 rounding.
fn shift_of(ch: u32) -> f32 {
    let i = ch * P.l;
    if (i >= arrayLength(&head)) {
        return 0.0;
    }
    let v = f32(head[i]);
    return select(0.0, v, is_finite(v));
}

// Power-of-two factor that brings the channel's shift to magnitude < 2:
// moments accumulate on (x - shift) * scale, so data around 1e30 (whose
// squares overflow f32) still gives exact-to-rounding statistics. Scaling by
// a power of two is exact; small data keeps scale 1.
fn scale_of(shift: f32) -> f32 {
    let e = (bitcast<u32>(abs(shift)) >> 23u) & 0xffu;
    let k = min(max(e, 127u) - 127u, 126u);
    return bitcast<f32>((127u - k) << 23u);
}

// Bit test, so no compiler may assume finite math away.
fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
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
    var c: Cursor;
    c.units = P.l / width;
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
    return (c.n * P.c + ch) * P.l + c.u * width - P.lead;
}

// Chan et al. merge of two moment states (count, mean, M2, sum). Counts are
// exact in f32 per partial; the merge never forms E[x^2] - E[x]^2.
fn merge_moments(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (b.x == 0.0) {
        return a;
    }
    if (a.x == 0.0) {
        return b;
    }
    let n = a.x + b.x;
    let wb = b.x / n;
    let d = b.y - a.y;
    let mean = a.y + d * wb;
    let m2 = a.z + b.z + d * d * (a.x * wb);
    return vec4<f32>(n, mean, m2, a.w + b.w);
}
