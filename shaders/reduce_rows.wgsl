// The reductions' rows entry points (after reduce.wgsl, whose Share,
// partial rows and THREAD_PARTIALS they use).
//
// (N, C) inputs: each thread takes four consecutive channels (one vec4 of a
// row where C % 4 == 0, else the two aligned vec4s those four values span:
// load4; `lanes_per_group` such lanes per workgroup) over a contiguous run
// of rows, so the four channels share the Welford count and its division.
// Lanes past the last channel (C % 4 != 0) are computed and not written.
// The four channels' states then go through the workgroup tree one after
// another. With C % 4 != 0 the tensor is one chunk (lead = 0).
fn shift4(q: u32) -> vec4<f32> {
    return vec4<f32>(shift_of(4u * q), shift_of(4u * q + 1u), shift_of(4u * q + 2u), shift_of(4u * q + 3u));
}

// Element offset of lane q of row r relative to the chunk (wrapping below
// it, see chunk_offset).
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
    let first = select(0u, rows_offset(rows.x, s.ch), count > 0u);
    return rows_moments(first, s.step * P.c, count, shift);
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
            let o = rows_offset(r, s.ch);
            let g = load4_dy(o);
            sdy += g;
            sdyx += g * x_hat4(load4(o), shift, mean, invstd);
        }
    }
    reduce_sums4(ids.li, s, sdy, sdyx);
}
