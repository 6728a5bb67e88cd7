// Per-channel partial reductions, one design for forward and backward.
//
// A workgroup covers `cpw` channels x `tpc` threads over one segment of each
// channel's values. For (N, C) inputs consecutive threads take consecutive
// channels (coalesced rows); for (N, C, L) inputs one channel per workgroup
// and consecutive threads take consecutive values along L. Each thread folds
// its values, a workgroup tree merges the threads of a channel, and one
// partial per (segment, channel) is written; `finalize.wgsl` merges the
// partials in a fixed order, so results are deterministic. Segments are
// counted in units: single values, or vec4s of L for the `*4` entry points
// (L % 4 == 0).
//
// moments_partial[4]: (count, mean, M2, sum) of (x - shift) * scale (Welford
//                     per thread, Chan merge; shift = the channel's first
//                     value, scale = scale_of(shift)).
// grads_partial[4]:   (sum dy, sum dy * x_hat) with the forward's statistics.

// Tensors are bound as vec4 arrays (buffers are padded to 16 bytes); the
// scalar kernels pick single components.
@group(0) @binding(1) var<storage, read> x4: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> dy4: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read> chan: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> partials: array<vec4<f32>>;

var<workgroup> scratch: array<vec4<f32>, WG>;

// Term t of one channel (sections of padded_channels() values, see common.wgsl).
fn term(t: u32, ch: u32) -> f32 {
    return pick(chan[t * padded_channels() / 4u + ch / 4u], ch % 4u);
}

struct Slot {
    ch: u32,
    seg: u32,
    ti: u32,
    start: u32,
    end: u32,
    valid: bool,
}

fn slot_of(li: u32, group: u32) -> Slot {
    var s: Slot;
    let tile = group % P.tiles;
    s.seg = group / P.tiles;
    s.ch = tile * P.cpw + li % P.cpw;
    s.ti = li / P.cpw;
    s.start = s.seg * P.seg_len + s.ti;
    s.end = min(P.m, (s.seg + 1u) * P.seg_len);
    s.valid = s.ch < P.c && s.seg < P.segments;
    return s;
}

fn merge(a: vec4<f32>, b: vec4<f32>, moments: bool) -> vec4<f32> {
    if (moments) {
        return merge_moments(a, b);
    }
    return a + b;
}

// Tree merge of the tpc threads of each channel; thread 0 of the channel
// writes the segment's partial.
fn tree_reduce(li: u32, s: Slot, v: vec4<f32>, moments: bool) {
    scratch[li] = v;
    workgroupBarrier();
    var stride = P.tpc / 2u;
    loop {
        if (stride == 0u) {
            break;
        }
        if (s.ti < stride) {
            scratch[li] = merge(scratch[li], scratch[li + stride * P.cpw], moments);
        }
        workgroupBarrier();
        stride = stride / 2u;
    }
    if (s.ti == 0u && s.valid) {
        write_partial(s, scratch[li]);
    }
}

fn write_partial(s: Slot, v: vec4<f32>) {
    partials[(P.seg_base + s.seg) * P.c + s.ch] = v;
}

// Chan update with four values: their two-pass moments merged into acc.
// Branch-free (count 0 merges exactly), one division per four values.
fn welford4(acc: vec4<f32>, v: vec4<f32>) -> vec4<f32> {
    let sum = v.x + v.y + v.z + v.w;
    let bm = sum * 0.25;
    let d = v - vec4<f32>(bm);
    let cnt = acc.x + 4.0;
    let w = 4.0 / cnt;
    let delta = bm - acc.y;
    let m2 = acc.z + dot(d, d) + delta * delta * acc.x * w;
    return vec4<f32>(cnt, acc.y + delta * w, m2, acc.w + sum);
}

// Welford update with one value.
fn welford(acc: vec4<f32>, v: f32) -> vec4<f32> {
    let cnt = acc.x + 1.0;
    let d = v - acc.y;
    let mean = acc.y + d / cnt;
    return vec4<f32>(cnt, mean, acc.z + d * (v - mean), acc.w + v);
}

// This thread's moments over its values of slot s.
fn moments_acc(s: Slot, width: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    if (s.valid) {
        let shift = shift_of(s.ch);
        let scale = scale_of(shift);
        var c = cursor(s.start, P.tpc, width);
        for (var j = s.start; j < s.end; j += P.tpc) {
            let o = chunk_offset(c, s.ch, width);
            if (o < P.numel) {
                if (width == 4u) {
                    // Two-pass moments of the four values, merged with Chan.
                    acc = welford4(acc, (vec4<f32>(x4[o / 4u]) - vec4<f32>(shift)) * scale);
                } else {
                    acc = welford(acc, (pick(vec4<f32>(x4[o / 4u]), o % 4u) - shift) * scale);
                }
            }
            advance(&c);
        }
    }
    return acc;
}

// This thread's (sum dy, sum dy * x_hat) over its values of slot s.
fn grads_acc(s: Slot, width: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    if (s.valid) {
        let a = vec3<f32>(term(TERM_SHIFT, s.ch), term(TERM_MEAN, s.ch), term(TERM_INVSTD, s.ch));
        var c = cursor(s.start, P.tpc, width);
        for (var j = s.start; j < s.end; j += P.tpc) {
            let o = chunk_offset(c, s.ch, width);
            if (o < P.numel) {
                if (width == 4u) {
                    let g4 = vec4<f32>(dy4[o / 4u]);
                    let xhat = ((vec4<f32>(x4[o / 4u]) - vec4<f32>(a.x)) - vec4<f32>(a.y)) * a.z;
                    acc += vec4<f32>(dot(g4, vec4<f32>(1.0)), dot(g4, xhat), 0.0, 0.0);
                } else {
                    let g1 = pick(vec4<f32>(dy4[o / 4u]), o % 4u);
                    let xhat = ((pick(vec4<f32>(x4[o / 4u]), o % 4u) - a.x) - a.y) * a.z;
                    acc += vec4<f32>(g1, g1 * xhat, 0.0, 0.0);
                }
            }
            advance(&c);
        }
    }
    return acc;
}
