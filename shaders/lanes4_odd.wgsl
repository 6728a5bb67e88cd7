// The four-channel column kernels' accessors (columns4.wgsl,
// columns4_regs.wgsl) for C % 4 != 0: lane q's channels 4q .. 4q + 3
// start anywhere in a vec4, so every value is written on its own (each
// thread writes whole memory locations, as in columns.wgsl); x, dy and
// the residual are read as the two aligned vec4s a lane's four values
// span, shifted by their offset in the first, which is the same for every
// lane of a row (span4: lavapipe, Zen 5, backward x a copy, three alternations,
// `32x131071` 4.61-5.31 -> 4.41-4.89, `128x32767` 4.66-5.93 -> 4.20-4.47,
// `17x246723` 4.52-5.64 -> 4.41-4.64, against four single reads). The
// last lane has fewer than four channels: its dead components repeat
// channel 4q's values (always live) and are never written, so a lane's
// arithmetic stays vec4 (and its sums raise no rescue flag of their own),
// and nothing outside the bindings is read.

@group(0) @binding(3) var<storage, read_write> terms4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> state1: array<f32>;
@group(0) @binding(6) var<storage, read_write> out1: array<elem>;
@group(0) @binding(8) var<storage, read_write> grad_weight1: array<f32>;
@group(0) @binding(9) var<storage, read_write> grad_bias1: array<f32>;
// The residual added before the activation (x itself when none), read
// as x is (span4).
@group(0) @binding(12) var<storage, read> residual4: array<vec4<elem>>;

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
    var v = v0;
    switch (e % 4u) {
        case 1u: { v = vec4<f32>(v0.yzw, v1.x); }
        case 2u: { v = vec4<f32>(v0.zw, v1.xy); }
        case 3u: { v = vec4<f32>(v0.w, v1.xyz); }
        default: {}
    }
    return select(vec4<f32>(v.x), v, live4(q));
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

fn row_store(q: u32, r: u32, v: vec4<f32>) {
    let e = row_at(q, r);
    let live = live4(q);
    out1[e] = elem(v.x);
    if (live.y) {
        out1[e + 1u] = elem(v.y);
    }
    if (live.z) {
        out1[e + 2u] = elem(v.z);
    }
    if (live.w) {
        out1[e + 3u] = elem(v.w);
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
