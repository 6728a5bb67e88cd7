// The reductions' rows entry points (after reduce.wgsl, whose Share,
// partial rows and THREAD_PARTIALS they use).
//
// (N, C) inputs: each thread takes four consecutive channels (one aligned
// vec4 of a row; `lanes_per_group` such lanes per workgroup) over a
// contiguous run of rows, so the four channels share the Welford count and
// its division. The four channels' states then go through the workgroup
// tree one after another.
// C % 4 != 0, or (N, C, L) with short rows of L % 4 != 0 (P.folds > 1; one
// chunk, lead = 0): the same over the tensor as rows of VC = lcm(C * L, 4)
// = C * folds virtual channels (virtual channel v is channel v / L % C, so
// every vec4 read is aligned and whole), partial
// states per virtual channel (finalize.wgsl merges the folds of each
// channel). Where the tensor ends inside the last virtual row, its cut vec4
// goes into the tail row (the last partial row) with one count per value.

// Virtual channels per row: C, or C * folds.
fn virtual_c() -> u32 {
    return P().c * max(P().folds, 1u);
}

// Rows over the chunk: P.n, or the virtual rows.
fn rows_n() -> u32 {
    if (P().folds > 1u) {
        let vc = virtual_c();
        return P().numel / vc + select(0u, 1u, P().numel % vc != 0u);
    }
    return P().n;
}

// The channel of virtual channel v.
fn channel_of_virtual(v: u32) -> u32 {
    return (v / P().l) % P().c;
}

fn shift4(q: u32) -> vec4<f32> {
    let c = 4u * q;
    return vec4<f32>(
        shift_of(channel_of_virtual(c)),
        shift_of(channel_of_virtual(c + 1u)),
        shift_of(channel_of_virtual(c + 2u)),
        shift_of(channel_of_virtual(c + 3u)),
    );
}

// Element offset of lane q of row r relative to the chunk (wrapping below
// it, see chunk_offset).
fn rows_offset(r: u32, q: u32) -> u32 {
    return r * virtual_c() + 4u * q - P().lead;
}

// Whether lane q of row r lies wholly inside the chunk.
fn lane_inside(r: u32, q: u32) -> bool {
    let o = rows_offset(r, q);
    return o < P().numel && P().numel - o >= 4u;
}

// The thread's rows [x, y) whose lane lies wholly inside the chunk: lanes
// are whole vec4s and chunks start on vec4 boundaries, so only the first
// row (lanes before the chunk start) and the last row (lanes past its end,
// or cut by it: the tail) can be cut.
fn row_range(s: Share) -> vec2<u32> {
    var lo = s.start;
    if (lo == 0u && 4u * s.ch < P().lead) {
        lo = s.step;
    }
    var hi = s.end;
    if (hi == rows_n() && hi > 0u && !lane_inside(hi - 1u, s.ch)) {
        hi -= 1u;
    }
    return vec2<u32>(lo, max(lo, hi));
}

// The tail of lane q: the components of its vec4 in the last row that lie
// inside the tensor where the tensor's end cuts that vec4 (else none).
fn tail_keep(q: u32) -> vec4<bool> {
    let n = rows_n();
    if (P().folds <= 1u || n == 0u) {
        return vec4<bool>(false);
    }
    let o = rows_offset(n - 1u, q);
    let inside = o < P().numel && P().numel - o < 4u;
    return vec4<bool>(inside) & (vec4<u32>(o) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(P().numel));
}

// The state of the one vec4 at element e, its components outside `keep`
// taken as the shift (0 in the state; the caller drops them).
fn vec4_moments(e: u32, shift: vec4<f32>, keep: vec4<bool>) -> RowsState {
    let raw = select(shift, load4(e), keep);
    let fast = fold_one4(raw, shift, false);
    if (fast_state_ok(fast.mean, fast.m2)) {
        return fast;
    }
    return fold_one4(raw, shift, true);
}

// rows_fold's first step: one vec4 into empty states.
fn fold_one4(raw: vec4<f32>, shift: vec4<f32>, careful: bool) -> RowsState {
    var tag = vec4<f32>(exponent_of(shift.x), exponent_of(shift.y), exponent_of(shift.z), exponent_of(shift.w));
    var v = fma(raw, units4(tag), -(shift * units4(tag)));
    if (careful && !in_range(v)) {
        tag = absorb_outliers4(Moments4(vec4<f32>(0.0), vec4<f32>(0.0), tag), v).tag;
        v = fma(raw, units4(tag), -(shift * units4(tag)));
    }
    // The Welford step from (0, 0): mean = v, M2 = v * (v - v).
    return RowsState(1.0, v, v * (v - v), tag);
}

// Writes lane q's tail entries (one per virtual channel, empty outside the
// tail) into the last partial row: thread 0 of segment 0 of each lane.
fn write_tail4(q: u32, entries: array<vec4<f32>, 4>) {
    let row = P().partial_rows - 1u;
    for (var k = 0u; k < 4u; k += 1u) {
        partials[row * virtual_c() + 4u * q + k] = entries[k];
    }
}

fn owns_tail(s: Share) -> bool {
    return P().folds > 1u && s.seg == 0u && s.ti == 0u && live4(s);
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
        if (ch < virtual_c()) {
            partials[partial_row(s) * virtual_c() + ch] = vec4<f32>(a[k], b[k], c[k], d[k]);
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
    let g = min(P().threads_per_lane, 16u);
    if (s.ti < g) {
        for (var t = s.ti + g; t < P().threads_per_lane; t += g) {
            fold4(li, li + (t - s.ti) * P().lanes_per_group, moments);
        }
    }
    workgroupBarrier();
    if (s.ti == 0u) {
        for (var t = 1u; t < g; t += 1u) {
            fold4(li, li + t * P().lanes_per_group, moments);
        }
    }
}

fn live4(s: Share) -> bool {
    return s.ch * 4u < virtual_c() && s.seg < P().segments;
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
    let first = select(0u, rows_offset(rows.x, s.ch), count > 0u);
    return rows_moments(first, s.step * virtual_c(), count, shift);
}

@compute @workgroup_size(WG)
fn moments_partial_rows(ids: Ids) {
    moments_rows(ids, false);
}

@compute @workgroup_size(WG)
fn moments_partial_rows_sweep(ids: Ids) {
    moments_rows(ids, true);
}

fn moments_rows(ids: Ids, sweep: bool) {
    // Share.ch is the vec4 lane here; valid while its first channel exists.
    let s = share_of(ids.li, group_index(ids));
    if (!sweep && paired()) {
        moments_paired(s);
        return;
    }
    var st: RowsState;
    if (sweep) {
        st = sweep_state(s);
    } else {
        st = rows_state(s);
    }
    reduce_moments4(ids.li, s, st.cnt, st.mean, st.m2, st.tag);
    if (owns_tail(s)) {
        let keep = tail_keep(s.ch);
        var e: array<vec4<f32>, 4>;
        if (any(keep)) {
            let t = vec4_moments(rows_offset(rows_n() - 1u, s.ch), shift4(s.ch), keep);
            for (var k = 0u; k < 4u; k += 1u) {
                e[k] = select(vec4<f32>(0.0), vec4<f32>(1.0, t.mean[k], t.m2[k], t.tag[k]), keep[k]);
            }
        }
        write_tail4(s.ch, e);
    }
}

// Term t of the four channels of lane q (virtual channels with folds).
fn lane_term4(t: u32, q: u32) -> vec4<f32> {
    if (P().folds > 1u) {
        let c = 4u * q;
        return vec4<f32>(
            term(t, channel_of_virtual(c)),
            term(t, channel_of_virtual(c + 1u)),
            term(t, channel_of_virtual(c + 2u)),
            term(t, channel_of_virtual(c + 3u)),
        );
    }
    return terms[t * padded_channels() / 4u + q];
}

// The terms x_hat takes of lane q.
struct XhatTerms {
    shift: vec4<f32>,
    mean: vec4<f32>,
    invstd: vec4<f32>,
}

fn xhat_terms(q: u32) -> XhatTerms {
    return XhatTerms(lane_term4(TERM_SHIFT, q), lane_term4(TERM_MEAN, q), lane_term4(TERM_INVSTD, q));
}

// Gradient sums of four channels: sum dy, sum dy * x_hat.
struct GradSums {
    dy: vec4<f32>,
    dyx: vec4<f32>,
}

fn grads_step(acc: GradSums, o: u32, t: XhatTerms) -> GradSums {
    let g = load4_dy(o);
    return GradSums(acc.dy + g, acc.dyx + g * x_hat4(load4(o), t.shift, t.mean, t.invstd));
}

// Lane q's sums over rows [rows.x, rows.y), every step-th.
fn lane_grads(q: u32, rows: vec2<u32>, step: u32, t: XhatTerms) -> GradSums {
    var acc = GradSums(vec4<f32>(0.0), vec4<f32>(0.0));
    for (var r = rows.x; r < rows.y; r += step) {
        acc = grads_step(acc, rows_offset(r, q), t);
    }
    return acc;
}

fn write_grad_sums(s: Share, g: GradSums) {
    write_partial4(s, g.dy, g.dyx, vec4<f32>(0.0), vec4<f32>(0.0));
}

@compute @workgroup_size(WG)
fn grads_partial_rows(ids: Ids) {
    grads_rows(ids, false);
}

@compute @workgroup_size(WG)
fn grads_partial_rows_sweep(ids: Ids) {
    grads_rows(ids, true);
}

fn grads_rows(ids: Ids, sweep: bool) {
    let s = share_of(ids.li, group_index(ids));
    if (!sweep && paired()) {
        grads_paired(s);
        return;
    }
    var t = XhatTerms(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var sums = GradSums(vec4<f32>(0.0), vec4<f32>(0.0));
    if (live4(s)) {
        t = xhat_terms(s.ch);
    }
    if (sweep) {
        sums = sweep_grads(s, t);
    } else if (live4(s)) {
        sums = lane_grads(s.ch, row_range(s), s.step, t);
    }
    reduce_sums4(ids.li, s, sums.dy, sums.dyx);
    if (owns_tail(s)) {
        let keep = tail_keep(s.ch);
        var e: array<vec4<f32>, 4>;
        if (any(keep)) {
            let o = rows_offset(rows_n() - 1u, s.ch);
            let g = select(vec4<f32>(0.0), load4_dy(o), keep);
            let gx = select(vec4<f32>(0.0), g * x_hat4(load4(o), t.shift, t.mean, t.invstd), keep);
            for (var k = 0u; k < 4u; k += 1u) {
                e[k] = vec4<f32>(g[k], gx[k], 0.0, 0.0);
            }
        }
        write_tail4(s.ch, e);
    }
}
