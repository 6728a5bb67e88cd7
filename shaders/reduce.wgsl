// Per-channel partial reductions, one design for forward and backward.
//
// A workgroup covers `cpw` channels x `tpc` threads over one segment of each
// channel's N * L values. For (N, C) inputs consecutive threads take
// consecutive channels (coalesced rows); for (N, C, L) inputs one channel per
// workgroup and consecutive threads take consecutive values of L. Each thread
// folds its values, a workgroup tree merges the threads of a channel, and one
// partial per (segment, channel) is written; `finalize.wgsl` merges the
// partials in a fixed order, so results are deterministic.
//
// moments_partial: (count, mean, M2, sum) of x - shift (Welford per thread,
//                  Chan merge), shift = the channel's first value, which
//                  keeps data like 1e4 + noise exact to f32 rounding.
// grads_partial:   (sum dy, sum dy * x_hat) with the forward's saved statistics.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> chan: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> partials: array<vec4<f32>>;

var<workgroup> scratch: array<vec4<f32>, WG>;

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
fn workgroup_reduce(li: u32, s: Slot, v: vec4<f32>, moments: bool) {
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
        partials[(P.seg_base + s.seg) * P.c + s.ch] = scratch[li];
    }
}

@compute @workgroup_size(WG)
fn moments_partial(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    for (var g = linear_group(wid, nwg); g < P.tiles * P.segments; g += group_count(nwg)) {
        moments_group(li, g);
    }
}

fn moments_group(li: u32, g: u32) {
    let s = slot_of(li, g);
    var acc = vec4<f32>(0.0);
    if (s.valid) {
        let shift = shift_of(s.ch);
        var j = s.start;
        loop {
            if (j >= s.end) {
                break;
            }
            let o = offset_of(s.ch, j) - P.lead;
            if (o < P.numel) {
                let v = x[o] - shift;
                let cnt = acc.x + 1.0;
                let d = v - acc.y;
                let mean = acc.y + d / cnt;
                acc = vec4<f32>(cnt, mean, acc.z + d * (v - mean), acc.w + v);
            }
            j += P.tpc;
        }
    }
    workgroup_reduce(li, s, acc, true);
}

@compute @workgroup_size(WG)
fn grads_partial(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    for (var g = linear_group(wid, nwg); g < P.tiles * P.segments; g += group_count(nwg)) {
        grads_group(li, g);
    }
}

fn grads_group(li: u32, g: u32) {
    let s = slot_of(li, g);
    var acc = vec4<f32>(0.0);
    if (s.valid) {
        let a = chan[2u * s.ch]; // (shift, mean - shift, invstd, weight * invstd)
        var j = s.start;
        loop {
            if (j >= s.end) {
                break;
            }
            let o = offset_of(s.ch, j) - P.lead;
            if (o < P.numel) {
                let g = dy[o];
                let xhat = ((x[o] - a.x) - a.y) * a.z;
                acc = vec4<f32>(acc.x + g, acc.y + g * xhat, 0.0, 0.0);
            }
            j += P.tpc;
        }
    }
    workgroup_reduce(li, s, acc, false);
}
