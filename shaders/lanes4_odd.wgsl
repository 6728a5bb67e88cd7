// The four-channel column kernels' accessors (columns4.wgsl,
// columns4_regs.wgsl, columns4_lanes.wgsl) for C % 4 != 0: lane q's
// channels 4q .. 4q + 3 start anywhere in a vec4, so the one-lane kernels
// write every value on its own (a component of store4.wgsl's vec4s: WGSL's
// memory locations are bytes, so threads writing different components of
// one vec4 do not conflict); x, dy and
// the residual are read as the two aligned vec4s a lane's four values
// span, shifted by their offset in the first, which is the same for every
// lane of a row (span4: lavapipe, Zen 5, backward x a copy, three alternations,
// `32x131071` 4.61-5.31 -> 4.41-4.89, `128x32767` 4.66-5.93 -> 4.20-4.47,
// `17x246723` 4.52-5.64 -> 4.41-4.64, against four single reads). The
// last lane has fewer than four channels: its dead components repeat
// channel 4q's values (always live) and are never written, so a lane's
// arithmetic stays vec4 (and its sums raise no rescue flag of their own),
// and nothing outside the bindings is read. The *_regs64_lanes kernels'
// accessors (four lanes per thread) are at the end.

@group(0) @binding(3) var<storage, read_write> terms4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> state1: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad_weight1: array<f32>;
@group(0) @binding(9) var<storage, read_write> grad_bias1: array<f32>;

// Lanes of the dispatch: ceil(C / 4).
fn lane_count() -> u32 {
    return (P().c + 3u) / 4u;
}

// Which of lane q's components are channels.
fn live4(q: u32) -> vec4<bool> {
    return vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(P().c);
}

// The offsets from channel 4q that lane q's components read: 0 for dead
// ones.
fn reads4(q: u32) -> vec4<u32> {
    return select(vec4<u32>(0u), vec4<u32>(0u, 1u, 2u, 3u), live4(q));
}

fn state_of(k: u32, q: u32) -> vec4<f32> {
    let e = k * P().c + 4u * q;
    let o = reads4(q);
    return vec4<f32>(state1[e + o.x], state1[e + o.y], state1[e + o.z], state1[e + o.w]);
}

fn set_state(k: u32, q: u32, v: vec4<f32>) {
    let e = k * P().c + 4u * q;
    let live = live4(q);
    state1[e] = v.x;
    if (live.y) {
        state1[e + 1u] = v.y;
    }
    if (live.z) {
        state1[e + 2u] = v.z;
    }
    if (live.w) {
        state1[e + 3u] = v.w;
    }
}

// Terms are sections of C rounded up to a multiple of 4 (common.wgsl), so
// a lane's terms are one aligned vec4 (the last lane's dead components are
// the section's padding).
fn term_of(k: u32, q: u32) -> vec4<f32> {
    return terms4[k * (padded_channels() / 4u) + q];
}

fn set_term(k: u32, q: u32, v: vec4<f32>) {
    terms4[k * (padded_channels() / 4u) + q] = v;
}

fn set_grads(q: u32, sdy: vec4<f32>, sdyx: vec4<f32>) {
    let e = 4u * q;
    let live = live4(q);
    grad_bias1[e] = sdy.x;
    grad_weight1[e] = sdyx.x;
    if (live.y) {
        grad_bias1[e + 1u] = sdy.y;
        grad_weight1[e + 1u] = sdyx.y;
    }
    if (live.z) {
        grad_bias1[e + 2u] = sdy.z;
        grad_weight1[e + 2u] = sdyx.z;
    }
    if (live.w) {
        grad_bias1[e + 3u] = sdy.w;
        grad_weight1[e + 3u] = sdyx.w;
    }
}

// Element of lane q's channel 4q in row r.
fn row_at(q: u32, r: u32) -> u32 {
    return r * P().c + 4u * q;
}

// The four values from element e = row_at(q, r), taken from the two
// aligned vec4s they span (v0 at e / 4, v1 after it) shifted by e % 4, the
// same for every lane of a row; dead components repeat the first.
fn span4(q: u32, e: u32, v0: vec4<f32>, v1: vec4<f32>) -> vec4<f32> {
    let v = shift_pair(v0, v1, e % 4u);
    return select(vec4<f32>(v.x), v, live4(q));
}

// The four values from component s of v0 on (into v1), without a branch
// (a switch over s was slower on lavapipe).
fn shift_pair(v0: vec4<f32>, v1: vec4<f32>, s: u32) -> vec4<f32> {
    let a = select(v0, vec4<f32>(v0.yzw, v1.x), s == 1u);
    let b = select(a, vec4<f32>(v0.zw, v1.xy), s == 2u);
    return select(b, vec4<f32>(v0.w, v1.xyz), s == 3u);
}

fn row_x(q: u32, r: u32) -> vec4<f32> {
    let e = row_at(q, r);
    let a = e / 4u;
    let b = min(a + 1u, arrayLength(&x4) - 1u);
    return span4(q, e, vec4<f32>(x4[a]), vec4<f32>(x4[b]));
}

fn row_dy(q: u32, r: u32) -> vec4<f32> {
    let e = row_at(q, r);
    let a = e / 4u;
    let b = min(a + 1u, arrayLength(&dy4) - 1u);
    return span4(q, e, vec4<f32>(dy4[a]), vec4<f32>(dy4[b]));
}

// One value of the output (store4.wgsl's vec4s: a component on its own).
fn store1(e: u32, v: f32) {
    out[e / 4u][e % 4u] = elem(v);
}

fn row_store(q: u32, r: u32, v: vec4<f32>) {
    let e = row_at(q, r);
    let live = live4(q);
    store1(e, v.x);
    if (live.y) {
        store1(e + 1u, v.y);
    }
    if (live.z) {
        store1(e + 2u, v.z);
    }
    if (live.w) {
        store1(e + 3u, v.w);
    }
}

// Through the epilogue (with row r's residual).
fn row_store_normalized(q: u32, r: u32, v: vec4<f32>) {
    var res = vec4<f32>(0.0);
    if ((EPILOGUE & EPILOGUE_RESIDUAL) != 0u) {
        let e = row_at(q, r);
        let a = e / 4u;
        let b = min(a + 1u, arrayLength(&residual4) - 1u);
        res = span4(q, e, vec4<f32>(residual4[a]), vec4<f32>(residual4[b]));
    }
    row_store(q, r, epilogue_of(v, res));
}

// The REG_LANES_64 consecutive lanes from q0 of the *_regs64_lanes kernels
// (columns4_lanes.wgsl), lane q0 + m after lane q0 + m - 1 in each row.
// Their sixteen values of a row span five aligned vec4s, each read once
// (not two per lane): a lane's four are taken from the vec4 the previous
// lane ended in (`carry`) and the next one, as span4 does. Their outputs
// are written as the aligned vec4s whose first value is one of the
// thread's: whole where all four are (the three or four in the middle),
// else component by component (where the previous thread's values end,
// and where the next thread's begin: each writes its own components).

// Where a thread's row r starts: vec4 a, offset s in it (the same for
// every lane of the row), and its w channels from q0's first.
struct LanesAt {
    q0: u32,
    a: u32,
    s: u32,
    w: u32,
}

fn lanes_at(q0: u32, r: u32) -> LanesAt {
    let e = row_at(q0, r);
    return LanesAt(q0, e / 4u, e % 4u, min(P().c - min(P().c, 4u * q0), 4u * REG_LANES_64));
}

// The five aligned vec4s the thread's values of a row span, read before
// any lane takes its values (one lane after another, each read after the
// previous lane's fold, was 5-10% slower: BENCHMARKS.md).
struct LanesIn {
    v0: vec4<f32>,
    v1: vec4<f32>,
    v2: vec4<f32>,
    v3: vec4<f32>,
    v4: vec4<f32>,
}

fn lanes_in_x(at: LanesAt, live: vec4<bool>) -> LanesIn {
    let z = vec4<f32>(0.0);
    if (!live.x) {
        return LanesIn(z, z, z, z, z);
    }
    let last = arrayLength(&x4) - 1u;
    return LanesIn(
        vec4<f32>(x4[at.a]),
        vec4<f32>(x4[min(at.a + 1u, last)]),
        vec4<f32>(x4[min(at.a + 2u, last)]),
        vec4<f32>(x4[min(at.a + 3u, last)]),
        vec4<f32>(x4[min(at.a + 4u, last)]),
    );
}

fn lanes_in_dy(at: LanesAt, live: vec4<bool>) -> LanesIn {
    let z = vec4<f32>(0.0);
    if (!live.x) {
        return LanesIn(z, z, z, z, z);
    }
    let last = arrayLength(&dy4) - 1u;
    return LanesIn(
        vec4<f32>(dy4[at.a]),
        vec4<f32>(dy4[min(at.a + 1u, last)]),
        vec4<f32>(dy4[min(at.a + 2u, last)]),
        vec4<f32>(dy4[min(at.a + 3u, last)]),
        vec4<f32>(dy4[min(at.a + 4u, last)]),
    );
}

// Lane q0 + m's values of the row (0 past C / 4), from the vec4s it spans
// (as span4; its dead components repeat its first).
fn lane_in(at: LanesAt, m: u32, v: LanesIn, live: vec4<bool>) -> vec4<f32> {
    if (!live[m]) {
        return vec4<f32>(0.0);
    }
    var w: vec4<f32>;
    switch (m) {
        case 0u: {
            w = shift_pair(v.v0, v.v1, at.s);
        }
        case 1u: {
            w = shift_pair(v.v1, v.v2, at.s);
        }
        case 2u: {
            w = shift_pair(v.v2, v.v3, at.s);
        }
        default: {
            w = shift_pair(v.v3, v.v4, at.s);
        }
    }
    let channels = vec4<u32>(4u * m) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(at.w);
    return select(vec4<f32>(w.x), w, channels);
}

fn lane_in_x(at: LanesAt, m: u32, v: LanesIn, live: vec4<bool>) -> vec4<f32> {
    return lane_in(at, m, v, live);
}

fn lane_in_dy(at: LanesAt, m: u32, v: LanesIn, live: vec4<bool>) -> vec4<f32> {
    return lane_in(at, m, v, live);
}

// The aligned vec4 whose components from the row's offset s on are `cur`'s
// first values, and before it `prev`'s last (span4 undone).
fn unspan4(prev: vec4<f32>, cur: vec4<f32>, s: u32) -> vec4<f32> {
    let a = select(cur, vec4<f32>(prev.w, cur.xyz), s == 1u);
    let b = select(a, vec4<f32>(prev.zw, cur.xy), s == 2u);
    return select(b, vec4<f32>(prev.yzw, cur.x), s == 3u);
}

// Of output vec4 a + k, the components [x, y) that are the thread's
// (channel 4k + i - s < w).
fn lanes_part(at: LanesAt, k: u32) -> vec2<u32> {
    let lo = select(0u, at.s - 4u * k, 4u * k < at.s);
    let hi = min(at.w + at.s - min(at.w + at.s, 4u * k), 4u);
    return vec2<u32>(lo, hi);
}

fn whole(part: vec2<u32>) -> bool {
    return part.x == 0u && part.y == 4u;
}

// The thread's components of output vec4 i, one by one (each a fixed
// component: a loop over them was 15-20% slower on lavapipe).
fn store_part(i: u32, part: vec2<u32>, v: vec4<f32>) {
    let c = vec4<u32>(0u, 1u, 2u, 3u);
    let own = (c >= vec4<u32>(part.x)) & (c < vec4<u32>(part.y));
    if (own.x) {
        out[i].x = elem(v.x);
    }
    if (own.y) {
        out[i].y = elem(v.y);
    }
    if (own.z) {
        out[i].z = elem(v.z);
    }
    if (own.w) {
        out[i].w = elem(v.w);
    }
}

// A row's outputs of the thread's lanes, kept until the last lane's
// (lanes_out_end): they are then written as the aligned vec4s they span
// (each written when its lane's value came, the backward of `64x65535`
// was 3% slower and its training + residual + ReLU 6%).
struct LanesOut {
    y0: vec4<f32>,
    y1: vec4<f32>,
    y2: vec4<f32>,
    y3: vec4<f32>,
}

// Keeps lane q0 + m's outputs y of the row.
fn lane_out(at: LanesAt, m: u32, y: vec4<f32>, o: ptr<function, LanesOut>, live: vec4<bool>) {
    switch (m) {
        case 0u: {
            (*o).y0 = y;
        }
        case 1u: {
            (*o).y1 = y;
        }
        case 2u: {
            (*o).y2 = y;
        }
        default: {
            (*o).y3 = y;
        }
    }
}

fn lane_out_normalized(at: LanesAt, m: u32, y: vec4<f32>, o: ptr<function, LanesOut>, live: vec4<bool>) {
    lane_out(at, m, y, o, live);
}

// Output vec4 a + k of the row, v (span4 undone).
fn lanes_line(at: LanesAt, k: u32, v: vec4<f32>) {
    let part = lanes_part(at, k);
    if (whole(part)) {
        store(at.a + k, v);
    } else {
        store_part(at.a + k, part, v);
    }
}

// The same through the epilogue (the residual read as the aligned vec4).
fn lanes_line_normalized(at: LanesAt, k: u32, v: vec4<f32>) {
    let part = lanes_part(at, k);
    let i = at.a + k;
    if (whole(part)) {
        store_normalized(i, v);
        return;
    }
    var res = vec4<f32>(0.0);
    if ((EPILOGUE & EPILOGUE_RESIDUAL) != 0u) {
        res = vec4<f32>(residual4[i]);
    }
    store_part(i, part, epilogue_of(v, res));
}

// Writes the row's outputs: every aligned vec4 that begins with one of the
// thread's values (the thread's lanes past C / 4 hold none).
fn lanes_out_end(at: LanesAt, o: ptr<function, LanesOut>, live: vec4<bool>) {
    if (!live.x) {
        return;
    }
    let y = *o;
    let z = vec4<f32>(0.0);
    lanes_line(at, 0u, unspan4(z, y.y0, at.s));
    lanes_line(at, 1u, unspan4(y.y0, y.y1, at.s));
    lanes_line(at, 2u, unspan4(y.y1, y.y2, at.s));
    lanes_line(at, 3u, unspan4(y.y2, y.y3, at.s));
    lanes_line(at, 4u, unspan4(y.y3, z, at.s));
}

fn lanes_out_end_normalized(at: LanesAt, o: ptr<function, LanesOut>, live: vec4<bool>) {
    if (!live.x) {
        return;
    }
    let y = *o;
    let z = vec4<f32>(0.0);
    lanes_line_normalized(at, 0u, unspan4(z, y.y0, at.s));
    lanes_line_normalized(at, 1u, unspan4(y.y0, y.y1, at.s));
    lanes_line_normalized(at, 2u, unspan4(y.y1, y.y2, at.s));
    lanes_line_normalized(at, 3u, unspan4(y.y2, y.y3, at.s));
    lanes_line_normalized(at, 4u, unspan4(y.y3, z, at.s));
}
