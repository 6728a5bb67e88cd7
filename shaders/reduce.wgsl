// Per-channel partial reductions, one design for forward and backward.
//
// A workgroup covers `lanes_per_group` lanes x `threads_per_lane` threads
// over one segment of each lane's values. A lane is one channel, or, for the
// `*_rows` entry points, a vec4 of four consecutive channels.
// For (N, C) inputs consecutive threads take consecutive channels (coalesced
// rows); for (N, C, L) inputs one channel per workgroup. Within a segment:
//   - workgroup merge (GPUs): consecutive threads take consecutive values
//     (coalesced), a workgroup tree (or subgroups) merges the threads of a
//     channel, and one partial per (segment, channel) is written;
//   - THREAD_PARTIALS (CPU adapters): each thread folds a contiguous run
//     and writes its own partial, (segment * threads_per_lane + thread,
//     channel); no
//     barriers.
// `finalize.wgsl` merges the partials in a fixed order, so results are
// deterministic. Segments are counted in units: single values, vec4s of L
// for the `*4` entry points (L % 4 == 0), or rows for `*_rows`.
//
// moments_partial:   moment states (count, mean, M2, tag; see moments.wgsl)
//                     of the values relative to the channel's shift, in
//                     units of 2^e (Welford per thread, Chan merge).
// grads_partial[4]:   (sum dy, sum dy * x_hat) with the forward's statistics.
// *_rows:             the same for (N, C) inputs with C % 4 == 0, four
//                     channels per thread (vec4 loads, one shared count).

// x4 and dy4 (common.wgsl) are vec4 arrays; the scalar kernels pick
// single components.
@group(0) @binding(3) var<storage, read> terms: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> partials: array<vec4<f32>>;

var<workgroup> scratch: array<vec4<f32>, WG>;

// Pipeline constant: every thread writes its own partial (partial row
// seg * threads_per_lane + ti) instead of merging the workgroup's threads
// first. The host sets it on CPU adapters, where any barrier makes the
// driver run the whole kernel as coroutines (see BENCHMARKS.md); with it
// set the barriers are dead code and compiled out.
override THREAD_PARTIALS: bool = false;

// Pipeline constant: units of the moments_partial / grads_partial entry
// points: 1 (single values) or 4 (vec4s along L, for L % 4 == 0).
override WIDTH: u32 = 1u;

// Row of the partials array that slot s writes.
fn partial_row(s: Share) -> u32 {
    if (THREAD_PARTIALS) {
        return P.partial_base + s.seg * P.threads_per_lane + s.ti;
    }
    return P.partial_base + s.seg;
}

// Term t of one channel (sections of padded_channels() values, see common.wgsl).
fn term(t: u32, ch: u32) -> f32 {
    return pick(terms[t * padded_channels() / 4u + ch / 4u], ch % 4u);
}

struct Share {
    ch: u32,
    seg: u32,
    ti: u32,
    start: u32,
    end: u32,
    step: u32,
    valid: bool,
}

fn share_of(li: u32, group: u32) -> Share {
    var s: Share;
    let tile = group % P.tiles;
    s.seg = group / P.tiles;
    s.ch = tile * P.lanes_per_group + li % P.lanes_per_group;
    s.ti = li / P.lanes_per_group;
    let seg_end = min(P.units, (s.seg + 1u) * P.seg_len);
    if (THREAD_PARTIALS) {
        // CPU adapters run a workgroup's invocations a SIMD group at a time:
        // each thread folds one contiguous run of the segment, which streams
        // (interleaved threads would stride through memory).
        let per = (P.seg_len + P.threads_per_lane - 1u) / P.threads_per_lane;
        s.start = min(seg_end, s.seg * P.seg_len + s.ti * per);
        s.end = min(seg_end, s.start + per);
        s.step = 1u;
    } else {
        // GPUs: consecutive threads take consecutive units (coalesced).
        s.start = s.seg * P.seg_len + s.ti;
        s.end = seg_end;
        s.step = P.threads_per_lane;
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

// Tree merge of the threads_per_lane threads of each channel; thread 0 of the channel
// writes the segment's partial.
fn tree_reduce(li: u32, s: Share, v: vec4<f32>, moments: bool) {
    if (THREAD_PARTIALS) {
        if (s.valid) {
            write_partial(s, v);
        }
        return;
    }
    scratch[li] = v;
    workgroupBarrier();
    var stride = P.threads_per_lane / 2u;
    loop {
        if (stride == 0u) {
            break;
        }
        if (s.ti < stride) {
            scratch[li] = merge(scratch[li], scratch[li + stride * P.lanes_per_group], moments);
        }
        workgroupBarrier();
        stride = stride / 2u;
    }
    if (s.ti == 0u && s.valid) {
        write_partial(s, scratch[li]);
    }
}

fn write_partial(s: Share, v: vec4<f32>) {
    partials[partial_row(s) * P.c + s.ch] = v;
}

// Chan update with four values (in the state's units): their two-pass
// moments merged into acc. Branch-free, one division per four values.
fn welford4(acc: vec4<f32>, v: vec4<f32>) -> vec4<f32> {
    let bm = (v.x + v.y + v.z + v.w) * 0.25;
    let d = v - vec4<f32>(bm);
    let cnt = acc.x + 4.0;
    let w = 4.0 / cnt;
    let delta = bm - acc.y;
    let m2 = acc.z + dot(d, d) + delta * delta * acc.x * w;
    return vec4<f32>(cnt, acc.y + delta * w, m2, acc.w);
}

// This thread's moment state over its values of share s, `width` values at
// a time, each x entering as x * u - shift * u in the state's unit u.
// The fast pass keeps the starting unit; only where its result is not
// finite (an overflow, or NaN/infinite inputs) does the careful pass run,
// which raises the exponent before any value could overflow and records
// NaN/infinite values.
fn moments_acc(s: Share, width: u32) -> vec4<f32> {
    let fast = moments_pass(s, width, false);
    if (is_finite(fast.y) && is_finite(fast.z)) {
        return fast;
    }
    return moments_pass(s, width, true);
}

fn moments_pass(s: Share, width: u32, careful: bool) -> vec4<f32> {
    let shift = shift_of(s.ch);
    var acc = empty_state(exponent_of(shift));
    if (s.valid) {
        var u = state_unit(acc);
        var shu = shift * u;
        var c = cursor(s.start, s.step, width);
        for (var j = s.start; j < s.end; j += s.step) {
            let o = chunk_offset(c, s.ch, width);
            if (o < P.numel) {
                let raw = vec4<f32>(x4[o / 4u]);
                if (width == 4u) {
                    var v = raw * u - vec4<f32>(shu);
                    if (careful && !in_range(v)) {
                        acc = absorb_outliers(acc, v);
                        u = state_unit(acc);
                        shu = shift * u;
                        v = raw * u - vec4<f32>(shu);
                    }
                    acc = welford4(acc, v);
                } else {
                    let x = pick(raw, o % 4u);
                    var v = x * u - shu;
                    if (careful && !in_range(vec4<f32>(v))) {
                        acc = absorb_outliers(acc, vec4<f32>(v, 0.0, 0.0, 0.0));
                        u = state_unit(acc);
                        shu = shift * u;
                        v = x * u - shu;
                    }
                    acc = welford(acc, v);
                }
            }
            advance(&c);
        }
    }
    return acc;
}

// This thread's (sum dy, sum dy * x_hat) over its values of slot s.
fn grads_acc(s: Share, width: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    if (s.valid) {
        let a = vec3<f32>(term(TERM_SHIFT, s.ch), term(TERM_MEAN, s.ch), term(TERM_INVSTD, s.ch));
        var c = cursor(s.start, s.step, width);
        for (var j = s.start; j < s.end; j += s.step) {
            let o = chunk_offset(c, s.ch, width);
            if (o < P.numel) {
                if (width == 4u) {
                    let g4 = vec4<f32>(dy4[o / 4u]);
                    let xhat = x_hat4(vec4<f32>(x4[o / 4u]), vec4<f32>(a.x), vec4<f32>(a.y), vec4<f32>(a.z));
                    acc += vec4<f32>(dot(g4, vec4<f32>(1.0)), dot(g4, xhat), 0.0, 0.0);
                } else {
                    let g1 = pick(vec4<f32>(dy4[o / 4u]), o % 4u);
                    let x1 = vec4<f32>(pick(vec4<f32>(x4[o / 4u]), o % 4u));
                    let xhat = x_hat4(x1, vec4<f32>(a.x), vec4<f32>(a.y), vec4<f32>(a.z)).x;
                    acc += vec4<f32>(g1, g1 * xhat, 0.0, 0.0);
                }
            }
            advance(&c);
        }
    }
    return acc;
}

// (N, C) inputs with C % 4 == 0: each thread takes four consecutive
// channels (one vec4 of a row, `lanes_per_group` such lanes per workgroup) over a
// contiguous run of rows, so every load is a whole vec4 and the four
// channels share the Welford count and its division. The four channels'
// states then go through the workgroup tree one after another.
fn shift4(q: u32) -> vec4<f32> {
    return vec4<f32>(shift_of(4u * q), shift_of(4u * q + 1u), shift_of(4u * q + 2u), shift_of(4u * q + 3u));
}

// Offset of vec4 lane q of row r relative to the chunk (wrapping below it, see
// chunk_offset).
fn rows_offset(r: u32, q: u32) -> u32 {
    return r * P.c + 4u * q - P.lead;
}

// The thread's rows [x, y) whose lane lies inside the chunk: lanes are
// whole vec4s and chunks start on vec4 boundaries, so only the first row
// (lanes before the chunk start) and the last row (lanes past its end) can
// be cut.
fn row_range(s: Share) -> vec2<u32> {
    var lo = s.start;
    if (lo == 0u && 4u * s.ch < P.lead) {
        lo = s.step;
    }
    var hi = s.end;
    if (hi == P.n && hi > 0u && rows_offset(hi - 1u, s.ch) >= P.numel) {
        hi -= 1u;
    }
    return vec2<u32>(lo, max(lo, hi));
}

// Four-channel states of the workgroup's threads: one count (shared by the
// four channels) and a vec4 per moment (rows_c: each channel's tag).
var<workgroup> rows_cnt: array<f32, WG>;
var<workgroup> rows_a: array<vec4<f32>, WG>;
var<workgroup> rows_b: array<vec4<f32>, WG>;
var<workgroup> rows_c: array<vec4<f32>, WG>;

// Writes the four partials of vec4 lane s.ch: channel 4 * s.ch + k gets
// (a[k], b[k], c[k], d[k]).
fn write_partial4(s: Share, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) {
    for (var k = 0u; k < 4u; k += 1u) {
        let ch = s.ch * 4u + k;
        if (ch < P.c) {
            partials[partial_row(s) * P.c + ch] = vec4<f32>(a[k], b[k], c[k], d[k]);
        }
    }
}

// Merges lane state `src` into `dst` in workgroup memory: plain sums, or
// Chan's formula for four channels at once (they share the count).
fn fold4_sums(dst: u32, src: u32) {
    rows_a[dst] += rows_a[src];
    rows_b[dst] += rows_b[src];
}

fn fold4_moments(dst: u32, src: u32) {
    let m = merge_moments4(
        rows_cnt[dst],
        Moments4(rows_a[dst], rows_b[dst], rows_c[dst]),
        rows_cnt[src],
        Moments4(rows_a[src], rows_b[src], rows_c[src]),
    );
    rows_a[dst] = m.mean;
    rows_b[dst] = m.m2;
    rows_c[dst] = m.tag;
    rows_cnt[dst] += rows_cnt[src];
}

fn fold4(dst: u32, src: u32, moments: bool) {
    if (moments) {
        fold4_moments(dst, src);
    } else {
        fold4_sums(dst, src);
    }
}

// Folds each lane's threads_per_lane states into its thread 0's entry in a fixed order,
// in two levels with two barriers: threads ti < 16 fold ti + 16, ti + 32,
// ...; then thread 0 folds threads 1 .. 15.
fn fold_lanes4(li: u32, s: Share, moments: bool) {
    workgroupBarrier();
    let g = min(P.threads_per_lane, 16u);
    if (s.ti < g) {
        for (var t = s.ti + g; t < P.threads_per_lane; t += g) {
            fold4(li, li + (t - s.ti) * P.lanes_per_group, moments);
        }
    }
    workgroupBarrier();
    if (s.ti == 0u) {
        for (var t = 1u; t < g; t += 1u) {
            fold4(li, li + t * P.lanes_per_group, moments);
        }
    }
}

fn live4(s: Share) -> bool {
    return s.ch * 4u < P.c && s.seg < P.segments;
}

fn reduce_moments4(li: u32, s: Share, cnt: f32, mean: vec4<f32>, m2: vec4<f32>, tag: vec4<f32>) {
    if (THREAD_PARTIALS) {
        if (live4(s)) {
            write_partial4(s, vec4<f32>(cnt), mean, m2, tag);
        }
        return;
    }
    rows_cnt[li] = cnt;
    rows_a[li] = mean;
    rows_b[li] = m2;
    rows_c[li] = tag;
    fold_lanes4(li, s, true);
    if (s.ti == 0u && live4(s)) {
        write_partial4(s, vec4<f32>(rows_cnt[li]), rows_a[li], rows_b[li], rows_c[li]);
    }
}

fn reduce_sums4(li: u32, s: Share, a: vec4<f32>, b: vec4<f32>) {
    if (THREAD_PARTIALS) {
        if (live4(s)) {
            write_partial4(s, a, b, vec4<f32>(0.0), vec4<f32>(0.0));
        }
        return;
    }
    rows_a[li] = a;
    rows_b[li] = b;
    fold_lanes4(li, s, false);
    if (s.ti == 0u && live4(s)) {
        write_partial4(s, rows_a[li], rows_b[li], vec4<f32>(0.0), vec4<f32>(0.0));
    }
}

// Four channels' states over share s's rows (rows_moments, moments.wgsl).
fn rows_state(s: Share) -> RowsState {
    let shift = shift4(s.ch);
    let rows = row_range(s);
    var count = 0u;
    if (live4(s)) {
        count = (rows.y - rows.x + s.step - 1u) / s.step;
    }
    let first = select(0u, rows_offset(rows.x, s.ch) / 4u, count > 0u);
    return rows_moments(first, s.step * P.c / 4u, count, shift);
}

@compute @workgroup_size(WG)
fn moments_partial_rows(ids: Ids) {
    // Share.ch is the vec4 lane here; valid while its first channel exists.
    let s = share_of(ids.li, group_index(ids));
    let st = rows_state(s);
    reduce_moments4(ids.li, s, st.cnt, st.mean, st.m2, st.tag);
}

@compute @workgroup_size(WG)
fn grads_partial_rows(ids: Ids) {
    let s = share_of(ids.li, group_index(ids));
    var sdy = vec4<f32>(0.0);
    var sdyx = vec4<f32>(0.0);
    if (live4(s)) {
        let pc4 = padded_channels() / 4u;
        let shift = terms[TERM_SHIFT * pc4 + s.ch];
        let mean = terms[TERM_MEAN * pc4 + s.ch];
        let invstd = terms[TERM_INVSTD * pc4 + s.ch];
        let rows = row_range(s);
        for (var r = rows.x; r < rows.y; r += s.step) {
            let o = rows_offset(r, s.ch) / 4u;
            let g = vec4<f32>(dy4[o]);
            sdy += g;
            sdyx += g * x_hat4(vec4<f32>(x4[o]), shift, mean, invstd);
        }
    }
    reduce_sums4(ids.li, s, sdy, sdyx);
}
