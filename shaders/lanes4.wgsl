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

// The REG_LANES_64 consecutive lanes from q0 of the *_regs64_lanes kernels
// (columns4_lanes.wgsl), lane q0 + m after lane q0 + m - 1 in each row:
// each lane's whole vec4, read and written on its own (the carries of
// lanes4_odd.wgsl's form are unused). Lanes past C / 4 read 0 and write
// nothing.

// Lane q0's vec4 of row r.
struct LanesAt {
    i: u32,
}

fn lanes_at(q0: u32, r: u32) -> LanesAt {
    return LanesAt(row_at(q0, r));
}

// A row's input of the thread: where its lanes' vec4s are (each read by
// lane_in, after the previous lane's fold: reading all four lanes' x and
// dy first made the backward 8% slower).
struct LanesIn {
    i: u32,
}

fn lanes_in_x(at: LanesAt, live: vec4<bool>) -> LanesIn {
    return LanesIn(at.i);
}

fn lanes_in_dy(at: LanesAt, live: vec4<bool>) -> LanesIn {
    return LanesIn(at.i);
}

fn lane_in_x(at: LanesAt, m: u32, v: LanesIn, live: vec4<bool>) -> vec4<f32> {
    if (!live[m]) {
        return vec4<f32>(0.0);
    }
    return vec4<f32>(x4[v.i + m]);
}

fn lane_in_dy(at: LanesAt, m: u32, v: LanesIn, live: vec4<bool>) -> vec4<f32> {
    if (!live[m]) {
        return vec4<f32>(0.0);
    }
    return vec4<f32>(dy4[v.i + m]);
}

// Nothing is kept between lanes: each lane's vec4 is written as it comes.
alias LanesOut = u32;

fn lane_out(at: LanesAt, m: u32, y: vec4<f32>, o: ptr<function, LanesOut>, live: vec4<bool>) {
    if (live[m]) {
        store(at.i + m, y);
    }
}

fn lane_out_normalized(at: LanesAt, m: u32, y: vec4<f32>, o: ptr<function, LanesOut>, live: vec4<bool>) {
    if (live[m]) {
        store_normalized(at.i + m, y);
    }
}

fn lanes_out_end(at: LanesAt, o: ptr<function, LanesOut>, live: vec4<bool>) {}

fn lanes_out_end_normalized(at: LanesAt, o: ptr<function, LanesOut>, live: vec4<bool>) {}
