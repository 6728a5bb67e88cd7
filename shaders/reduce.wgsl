// Per-channel partial reductions, one design for forward and backward.
//
// A workgroup covers `cpw` channels (quads of four channels for the `*_rows`
// entry points) x `tpc` threads over one segment of each channel's values.
// For (N, C) inputs consecutive threads take consecutive channels (coalesced
// rows); for (N, C, L) inputs one channel per workgroup. Within a segment:
//   - workgroup merge (GPUs): consecutive threads take consecutive values
//     (coalesced), a workgroup tree (or subgroups) merges the threads of a
//     channel, and one partial per (segment, channel) is written;
//   - THREAD_PARTIALS (CPU adapters): each thread folds a contiguous run
//     and writes its own partial, (segment * tpc + thread, channel); no
//     barriers.
// `finalize.wgsl` merges the partials in a fixed order, so results are
// deterministic. Segments are counted in units: single values, vec4s of L
// for the `*4` entry points (L % 4 == 0), or rows for `*_rows`.
//
// moments_partial[4]: (count, mean, M2, sum) of (x - shift) * scale (Welford
//                     per thread, Chan merge; shift = the channel's first
//                     value, scale = scale_of(shift)).
// grads_partial[4]:   (sum dy, sum dy * x_hat) with the forward's statistics.
// *_rows:             the same for (N, C) inputs with C % 4 == 0, four
//                     channels per thread (vec4 loads, one shared count).

// Tensors are bound as vec4 arrays (buffers are padded to 16 bytes); the
// scalar kernels pick single components.
@group(0) @binding(1) var<storage, read> x4: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> dy4: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read> chan: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> partials: array<vec4<f32>>;

var<workgroup> scratch: array<vec4<f32>, WG>;

// Pipeline constant: every thread writes its own partial (partial row
// seg * tpc + ti) instead of merging the workgroup's threads first. The
// host sets it on CPU adapters, where a barrier makes the driver run the
// whole kernel as coroutines (measured on lavapipe: reductions ~1.3x
// slower); with it set the barriers are dead code and compiled out.
override THREAD_PARTIALS: bool = false;

// Row of the partials array that slot s writes.
fn partial_row(s: Slot) -> u32 {
    if (THREAD_PARTIALS) {
        return P.seg_base + s.seg * P.tpc + s.ti;
    }
    return P.seg_base + s.seg;
}

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
    step: u32,
    valid: bool,
}

fn slot_of(li: u32, group: u32) -> Slot {
    var s: Slot;
    let tile = group % P.tiles;
    s.seg = group / P.tiles;
    s.ch = tile * P.cpw + li % P.cpw;
    s.ti = li / P.cpw;
    let seg_end = min(P.m, (s.seg + 1u) * P.seg_len);
    if (THREAD_PARTIALS) {
        // CPU adapters run a workgroup's invocations a SIMD group at a time:
        // each thread folds one contiguous run of the segment, which streams
        // (interleaved threads would stride through memory).
        let per = (P.seg_len + P.tpc - 1u) / P.tpc;
        s.start = min(seg_end, s.seg * P.seg_len + s.ti * per);
        s.end = min(seg_end, s.start + per);
        s.step = 1u;
    } else {
        // GPUs: consecutive threads take consecutive units (coalesced).
        s.start = s.seg * P.seg_len + s.ti;
        s.end = seg_end;
        s.step = P.tpc;
    }
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
    if (THREAD_PARTIALS) {
        if (s.valid) {
            write_partial(s, v);
        }
        return;
    }
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
    partials[partial_row(s) * P.c + s.ch] = v;
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
        var c = cursor(s.start, s.step, width);
        for (var j = s.start; j < s.end; j += s.step) {
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
        var c = cursor(s.start, s.step, width);
        for (var j = s.start; j < s.end; j += s.step) {
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

// (N, C) inputs with C % 4 == 0: each thread takes four consecutive
// channels (one vec4 of a row, `cpw` such quads per workgroup) over a
// contiguous run of rows, so every load is a whole vec4 and the four
// channels share the Welford count and its division. The four channels'
// states then go through the workgroup tree one after another.
fn quad_shift(q: u32) -> vec4<f32> {
    return vec4<f32>(shift_of(4u * q), shift_of(4u * q + 1u), shift_of(4u * q + 2u), shift_of(4u * q + 3u));
}

// Offset of quad q of row r relative to the chunk (wrapping below it, see
// chunk_offset).
fn quad_offset(r: u32, q: u32) -> u32 {
    return r * P.c + 4u * q - P.lead;
}

// The thread's rows [x, y) whose quad lies inside the chunk: quads are
// whole vec4s and chunks start on vec4 boundaries, so only the first row
// (quads before the chunk start) and the last row (quads past its end) can
// be cut.
fn quad_rows(s: Slot) -> vec2<u32> {
    var lo = s.start;
    if (lo == 0u && 4u * s.ch < P.lead) {
        lo = s.step;
    }
    var hi = s.end;
    if (hi == P.n && hi > 0u && quad_offset(hi - 1u, s.ch) >= P.numel) {
        hi -= 1u;
    }
    return vec2<u32>(lo, max(lo, hi));
}

// Quad states of the workgroup's threads: one count (shared by the four
// channels) and a vec4 per moment.
var<workgroup> quad_cnt: array<f32, WG>;
var<workgroup> quad_a: array<vec4<f32>, WG>;
var<workgroup> quad_b: array<vec4<f32>, WG>;
var<workgroup> quad_c: array<vec4<f32>, WG>;

// Writes the four partials of quad s.ch: channel 4 * s.ch + k gets
// (a[k], b[k], c[k], d[k]).
fn write_quad(s: Slot, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) {
    for (var k = 0u; k < 4u; k += 1u) {
        let ch = s.ch * 4u + k;
        if (ch < P.c) {
            partials[partial_row(s) * P.c + ch] = vec4<f32>(a[k], b[k], c[k], d[k]);
        }
    }
}

// Merges quad state `src` into `dst` in workgroup memory: Chan's formula
// for moments, four channels at once (they share the count), or plain sums.
fn fold_quad(dst: u32, src: u32, moments: bool) {
    if (!moments) {
        quad_a[dst] += quad_a[src];
        quad_b[dst] += quad_b[src];
        return;
    }
    let nb = quad_cnt[src];
    if (nb > 0.0) {
        let na = quad_cnt[dst];
        let n = na + nb;
        let wb = nb / n;
        let d = quad_a[src] - quad_a[dst];
        quad_a[dst] += d * wb;
        quad_b[dst] += quad_b[src] + d * d * (na * wb);
        quad_c[dst] += quad_c[src];
        quad_cnt[dst] = n;
    }
}

// Folds each quad's tpc states into its thread 0's slot in a fixed order,
// in two levels with two barriers: threads ti < 16 fold ti + 16, ti + 32,
// ...; then thread 0 folds threads 1 .. 15.
fn fold_quads(li: u32, s: Slot, moments: bool) {
    workgroupBarrier();
    let g = min(P.tpc, 16u);
    if (s.ti < g) {
        for (var t = s.ti + g; t < P.tpc; t += g) {
            fold_quad(li, li + (t - s.ti) * P.cpw, moments);
        }
    }
    workgroupBarrier();
    if (s.ti == 0u) {
        for (var t = 1u; t < g; t += 1u) {
            fold_quad(li, li + t * P.cpw, moments);
        }
    }
}

fn quad_live(s: Slot) -> bool {
    return s.ch * 4u < P.c && s.seg < P.segments;
}

fn reduce_quad_moments(li: u32, s: Slot, cnt: f32, mean: vec4<f32>, m2: vec4<f32>, sum: vec4<f32>) {
    if (THREAD_PARTIALS) {
        if (quad_live(s)) {
            write_quad(s, vec4<f32>(cnt), mean, m2, sum);
        }
        return;
    }
    quad_cnt[li] = cnt;
    quad_a[li] = mean;
    quad_b[li] = m2;
    quad_c[li] = sum;
    fold_quads(li, s, true);
    if (s.ti == 0u && quad_live(s)) {
        write_quad(s, vec4<f32>(quad_cnt[li]), quad_a[li], quad_b[li], quad_c[li]);
    }
}

fn reduce_quad_sums(li: u32, s: Slot, a: vec4<f32>, b: vec4<f32>) {
    if (THREAD_PARTIALS) {
        if (quad_live(s)) {
            write_quad(s, a, b, vec4<f32>(0.0), vec4<f32>(0.0));
        }
        return;
    }
    quad_a[li] = a;
    quad_b[li] = b;
    fold_quads(li, s, false);
    if (s.ti == 0u && quad_live(s)) {
        write_quad(s, quad_a[li], quad_b[li], vec4<f32>(0.0), vec4<f32>(0.0));
    }
}

@compute @workgroup_size(WG)
fn moments_partial_rows(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // Slot.ch is the quad here; valid while its first channel exists.
    let s = slot_of(li, linear_group(wid, nwg));
    var cnt = 0.0;
    var mean = vec4<f32>(0.0);
    var m2 = vec4<f32>(0.0);
    var sum = vec4<f32>(0.0);
    if (quad_live(s)) {
        let shift = quad_shift(s.ch);
        let scale = vec4<f32>(scale_of(shift.x), scale_of(shift.y), scale_of(shift.z), scale_of(shift.w));
        let rows = quad_rows(s);
        for (var r = rows.x; r < rows.y; r += s.step) {
            let v = (vec4<f32>(x4[quad_offset(r, s.ch) / 4u]) - shift) * scale;
            cnt += 1.0;
            let d = v - mean;
            mean += d / cnt;
            m2 += d * (v - mean);
            sum += v;
        }
    }
    reduce_quad_moments(li, s, cnt, mean, m2, sum);
}

@compute @workgroup_size(WG)
fn grads_partial_rows(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = slot_of(li, linear_group(wid, nwg));
    var sdy = vec4<f32>(0.0);
    var sdyx = vec4<f32>(0.0);
    if (quad_live(s)) {
        let pc4 = padded_channels() / 4u;
        let shift = chan[TERM_SHIFT * pc4 + s.ch];
        let mean = chan[TERM_MEAN * pc4 + s.ch];
        let invstd = chan[TERM_INVSTD * pc4 + s.ch];
        let rows = quad_rows(s);
        for (var r = rows.x; r < rows.y; r += s.step) {
            let o = quad_offset(r, s.ch) / 4u;
            let g = vec4<f32>(dy4[o]);
            sdy += g;
            sdyx += g * (((vec4<f32>(x4[o]) - shift) - mean) * invstd);
        }
    }
    reduce_quad_sums(li, s, sdy, sdyx);
}
