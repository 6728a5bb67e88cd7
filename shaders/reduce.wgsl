// Per-channel partial reductions, one design for forward and backward.
//
// A workgroup covers `lanes_per_group` lanes x `threads_per_lane` threads
// over one segment of each lane's values. A lane is one channel, or, for the
// `*_rows` entry points, a vec4 of four consecutive channels.
// For (N, C) inputs consecutive threads take consecutive channels (coalesced
// rows); for (N, C, L) inputs one channel per workgroup (with
// THREAD_PARTIALS, up to eight for many channels, long or small planes or short
// masked runs: plan_spread in src/gpu/plan/reduce.rs). Within a segment:
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
// *_rows:             the same for (N, C) inputs, four channels per thread
//                     (vec4 loads, one shared count; for C % 4 != 0, or
//                     short rows of odd L, over rows of lcm(C * L, 4)
//                     virtual channels; reduce_rows.wgsl).
// With MASKED (L > 4, L % 4 != 0) the units are the aligned vec4s each run
// of L values touches, the components outside the run masked off.

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

// Pipeline constant: units are masked vec4s of the runs of L values
// (masked_unit), for L > 4 with L % 4 != 0.
override MASKED: bool = false;

// Aligned vec4s one run of L values touches at most: the units per run
// with MASKED.
fn run_vec4s() -> u32 {
    return (P().l + 6u) / 4u;
}

struct MaskedUnit {
    // Index of the vec4 in the chunk binding.
    v: u32,
    // Its components inside the run and the chunk.
    mask: vec4<bool>,
    valid: bool,
}

// Unit (n, k) of channel ch: the k-th aligned vec4 touching the run of
// row n (in chunk coordinates, where the run may start before the chunk).
fn masked_unit(n: u32, k: u32, ch: u32) -> MaskedUnit {
    let p0 = i32((n * P().c + ch) * P().l) - i32(P().lead);
    let vi = (p0 >> 2u) + i32(k);
    let e = vec4<i32>(4 * vi) + vec4<i32>(0, 1, 2, 3);
    let lo = max(p0, 0);
    let hi = min(p0 + i32(P().l), i32(P().numel));
    var m: MaskedUnit;
    m.mask = (e >= vec4<i32>(lo)) & (e < vec4<i32>(hi));
    m.valid = any(m.mask);
    m.v = u32(max(vi, 0));
    return m;
}

// The thread's walk over its units (masked vec4s per run, or `width`
// values along L).
fn walk(s: Share, width: u32) -> Cursor {
    if (MASKED) {
        return cursor_of(s.start, s.step, run_vec4s());
    }
    return cursor(s.start, s.step, width);
}

// Row of the partials array that slot s writes.
fn partial_row(s: Share) -> u32 {
    if (THREAD_PARTIALS) {
        return P().partial_base + s.seg * P().threads_per_lane + s.ti;
    }
    return P().partial_base + s.seg;
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

// With THREAD_PARTIALS: the units of each thread's contiguous run of its
// segment (the last runs of a segment may be shorter, or empty), the same
// in every thread of a workgroup.
fn thread_run_len() -> u32 {
    return (P().seg_len + P().threads_per_lane - 1u) / P().threads_per_lane;
}

fn share_of(li: u32, group: u32) -> Share {
    var s: Share;
    let tile = group % P().tiles;
    s.seg = group / P().tiles;
    s.ch = tile * P().lanes_per_group + li % P().lanes_per_group;
    s.ti = li / P().lanes_per_group;
    let seg_end = min(P().units, (s.seg + 1u) * P().seg_len);
    if (THREAD_PARTIALS) {
        // CPU adapters run a workgroup's invocations a SIMD group at a time:
        // each thread folds one contiguous run of the segment, which streams
        // (interleaved threads would stride through memory).
        let per = thread_run_len();
        s.start = min(seg_end, s.seg * P().seg_len + s.ti * per);
        s.end = min(seg_end, s.start + per);
        s.step = 1u;
    } else {
        // GPUs: consecutive threads take consecutive units (coalesced).
        s.start = s.seg * P().seg_len + s.ti;
        s.end = seg_end;
        s.step = P().threads_per_lane;
    }
    s.valid = s.ch < P().c && s.seg < P().segments;
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
    var stride = P().threads_per_lane / 2u;
    loop {
        if (stride == 0u) {
            break;
        }
        if (s.ti < stride) {
            scratch[li] = merge(scratch[li], scratch[li + stride * P().lanes_per_group], moments);
        }
        workgroupBarrier();
        stride = stride / 2u;
    }
    if (s.ti == 0u && s.valid) {
        write_partial(s, scratch[li]);
    }
}

fn write_partial(s: Share, v: vec4<f32>) {
    partials[partial_row(s) * P().c + s.ch] = v;
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

// Chan update with the masked components of v (the others are 0; at least
// one is set).
fn welford_masked(acc: vec4<f32>, v: vec4<f32>, mask: vec4<bool>) -> vec4<f32> {
    let m = select(vec4<f32>(0.0), vec4<f32>(1.0), mask);
    let k = dot(m, vec4<f32>(1.0));
    let bm = dot(v, vec4<f32>(1.0)) / k;
    let d = (v - vec4<f32>(bm)) * m;
    let cnt = acc.x + k;
    let w = k / cnt;
    let delta = bm - acc.y;
    let m2 = acc.z + dot(d, d) + delta * delta * acc.x * w;
    return vec4<f32>(cnt, acc.y + delta * w, m2, acc.w);
}

// This thread's moment state over its values of share s, `width` values at
// a time, each x entering as x * u - shift * u in the state's unit u.
// The fast pass keeps the starting unit; only where its result is not
// finite (an overflow, or NaN/infinite inputs) or too large to merge safely
// (fast_state_ok) does the careful pass run,
// which raises the exponent before any value could overflow and records
// NaN/infinite values.
fn moments_acc(s: Share, width: u32) -> vec4<f32> {
    let fast = moments_pass(s, width, false);
    if (fast_state_ok(vec4<f32>(fast.y), vec4<f32>(fast.z))) {
        return fast;
    }
    return moments_pass(s, width, true);
}

fn moments_pass(s: Share, width: u32, careful: bool) -> vec4<f32> {
    let shift = shift_of(s.ch);
    var f = fold_start(shift);
    if (s.valid) {
        var c = walk(s, width);
        for (var j = s.start; j < s.end; j += s.step) {
            if (MASKED) {
                let mu = masked_unit(c.n, c.u, s.ch);
                if (mu.valid) {
                    let raw = vec4<f32>(x4[mu.v]);
                    var v = select(vec4<f32>(0.0), fma(raw, vec4<f32>(f.u), -vec4<f32>(f.shu)), mu.mask);
                    if (careful && !in_range(v)) {
                        f = fold_absorb(f, v, shift);
                        v = select(vec4<f32>(0.0), fma(raw, vec4<f32>(f.u), -vec4<f32>(f.shu)), mu.mask);
                    }
                    f.acc = welford_masked(f.acc, v, mu.mask);
                }
                advance(&c);
                continue;
            }
            let o = chunk_offset(c, s.ch, width);
            if (o < P().numel) {
                let raw = vec4<f32>(x4[o / 4u]);
                if (width == 4u) {
                    var v = fma(raw, vec4<f32>(f.u), -vec4<f32>(f.shu));
                    if (careful && !in_range(v)) {
                        f = fold_absorb(f, v, shift);
                        v = fma(raw, vec4<f32>(f.u), -vec4<f32>(f.shu));
                    }
                    f.acc = welford4(f.acc, v);
                } else {
                    let x = pick(raw, o % 4u);
                    var v = fma(x, f.u, -f.shu);
                    if (careful && !in_range(vec4<f32>(v))) {
                        f = fold_absorb(f, vec4<f32>(v, 0.0, 0.0, 0.0), shift);
                        v = fma(x, f.u, -f.shu);
                    }
                    f.acc = welford(f.acc, v);
                }
            }
            advance(&c);
        }
    }
    return f.acc;
}

// This thread's (sum dy, sum dy * x_hat) over its values of slot s.
fn grads_acc(s: Share, width: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    if (s.valid) {
        let a = vec3<f32>(term(TERM_SHIFT, s.ch), term(TERM_MEAN, s.ch), term(TERM_INVSTD, s.ch));
        var c = walk(s, width);
        for (var j = s.start; j < s.end; j += s.step) {
            if (MASKED) {
                let mu = masked_unit(c.n, c.u, s.ch);
                if (mu.valid) {
                    let g = select(vec4<f32>(0.0), vec4<f32>(dy4[mu.v]), mu.mask);
                    let xh = x_hat4(vec4<f32>(x4[mu.v]), vec4<f32>(a.x), vec4<f32>(a.y), vec4<f32>(a.z));
                    acc += vec4<f32>(dot(g, vec4<f32>(1.0)), dot(g, select(vec4<f32>(0.0), xh, mu.mask)), 0.0, 0.0);
                }
                advance(&c);
                continue;
            }
            let o = chunk_offset(c, s.ch, width);
            if (o < P().numel) {
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
