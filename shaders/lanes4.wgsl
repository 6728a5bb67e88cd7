// The four-channel column kernels' accessors (columns4.wgsl,
// columns4_regs.wgsl) for C % 4 == 0: lane q's channels 4q .. 4q + 3 are
// one aligned vec4 of every row and of every C-value section (state,
// terms, gradients), so every access is one whole vec4. lanes4_odd.wgsl
// has the same functions for other C.

@group(0) @binding(3) var<storage, read_write> terms4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> state4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> grad_weight4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> grad_bias4: array<vec4<f32>>;

// Lanes of the dispatch: C / 4.
fn lane_count() -> u32 {
    return P().c / 4u;
}

// Section k (C values: weight, bias, running_mean, running_var; or a
// TERM_*) of lane q, as a vec4 index.
fn section(k: u32, q: u32) -> u32 {
    return k * (P().c / 4u) + q;
}

fn state_of(k: u32, q: u32) -> vec4<f32> {
    return state4[section(k, q)];
}

fn set_state(k: u32, q: u32, v: vec4<f32>) {
    state4[section(k, q)] = v;
}

fn term_of(k: u32, q: u32) -> vec4<f32> {
    return terms4[section(k, q)];
}

fn set_term(k: u32, q: u32, v: vec4<f32>) {
    terms4[section(k, q)] = v;
}

fn set_grads(q: u32, sdy: vec4<f32>, sdyx: vec4<f32>) {
    grad_bias4[q] = sdy;
    grad_weight4[q] = sdyx;
}

// Lane q's vec4 of row r.
fn row_at(q: u32, r: u32) -> u32 {
    return q + r * (P().c / 4u);
}

fn row_x(q: u32, r: u32) -> vec4<f32> {
    return vec4<f32>(x4[row_at(q, r)]);
}

fn row_dy(q: u32, r: u32) -> vec4<f32> {
    return vec4<f32>(dy4[row_at(q, r)]);
}

fn row_store(q: u32, r: u32, v: vec4<f32>) {
    store(row_at(q, r), v);
}

// Through the epilogue (with row r's residual).
fn row_store_normalized(q: u32, r: u32, v: vec4<f32>) {
    store_normalized(row_at(q, r), v);
}
