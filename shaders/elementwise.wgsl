// Elementwise passes, one vec4 of the tensor per invocation, with the
// per-channel terms written by finalize.wgsl:
//
// normalize:  y  = ((x - shift) - (mean - shift)) * (weight * invstd) + bias
// grad_input: dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))
//             (in eval the two means are zero: dx = dy * weight * invstd)
//
// Three layouts, one entry point each (no branches or loops in the hot path):
// `*_planes` when L % 4 == 0 (a vec4 lies within one channel), `*_rows` for
// (N, C) inputs with C % 4 == 0 (a vec4 is four consecutive channels), and
// the general kernels, which look up each value's channel.
// Values past numel in the last vec4 land in the output's padding.

@group(0) @binding(1) var<storage, read> x4: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> dy4: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read> chan: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<elem>>;

fn load_x(i: u32) -> vec4<f32> {
    return vec4<f32>(x4[i]);
}

fn store(i: u32, v: vec4<f32>) {
    out[i] = vec4<elem>(v);
}

// Term t of one channel.
fn term(t: u32, ch: u32) -> f32 {
    return chan[t * padded_channels() / 4u + ch / 4u][ch % 4u];
}

// Term t of channels 4q .. 4q + 3.
fn term4(t: u32, q: u32) -> vec4<f32> {
    return chan[t * padded_channels() / 4u + q];
}

// Term t of the four values of the vec4 at element e0, any layout.
fn term_general(t: u32, e0: u32) -> vec4<f32> {
    var r: vec4<f32>;
    let q = (e0 + P.lead) / P.l;
    var l = (e0 + P.lead) - q * P.l;
    var ch = q % P.c;
    for (var k = 0u; k < 4u; k += 1u) {
        r[k] = term(t, ch);
        l += 1u;
        if (l == P.l) {
            l = 0u;
            ch += 1u;
            if (ch == P.c) {
                ch = 0u;
            }
        }
    }
    return r;
}

fn vec4_index(li: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return linear_group(wid, nwg) * WG + li;
}

fn plane_channel(i: u32) -> u32 {
    return ((i * 4u + P.lead) / P.l) % P.c;
}

fn row_quad(i: u32) -> u32 {
    return ((i * 4u + P.lead) % P.c) / 4u;
}

@compute @workgroup_size(WG)
fn normalize_planes(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = vec4_index(li, wid, nwg);
    if (i * 4u < P.numel) {
        let ch = plane_channel(i);
        store(i, ((load_x(i) - term(TERM_SHIFT, ch)) - term(TERM_MEAN, ch)) * term(TERM_SCALE, ch)
            + term(TERM_BIAS, ch));
    }
}

@compute @workgroup_size(WG)
fn normalize_rows(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = vec4_index(li, wid, nwg);
    if (i * 4u < P.numel) {
        let q = row_quad(i);
        store(i, ((load_x(i) - term4(TERM_SHIFT, q)) - term4(TERM_MEAN, q)) * term4(TERM_SCALE, q)
            + term4(TERM_BIAS, q));
    }
}

@compute @workgroup_size(WG)
fn normalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = vec4_index(li, wid, nwg);
    if (i * 4u < P.numel) {
        let e0 = i * 4u;
        store(i, ((load_x(i) - term_general(TERM_SHIFT, e0)) - term_general(TERM_MEAN, e0))
            * term_general(TERM_SCALE, e0) + term_general(TERM_BIAS, e0));
    }
}

fn grad_of(i: u32, k: vec4<f32>, m: vec4<f32>, invstd: vec4<f32>, a: vec4<f32>, mdy: vec4<f32>, mdx: vec4<f32>) -> vec4<f32> {
    let xhat = ((load_x(i) - k) - m) * invstd;
    return a * (vec4<f32>(dy4[i]) - mdy - xhat * mdx);
}

@compute @workgroup_size(WG)
fn grad_input_planes(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = vec4_index(li, wid, nwg);
    if (i * 4u < P.numel) {
        let ch = plane_channel(i);
        store(i, grad_of(
            i,
            vec4<f32>(term(TERM_SHIFT, ch)),
            vec4<f32>(term(TERM_MEAN, ch)),
            vec4<f32>(term(TERM_INVSTD, ch)),
            vec4<f32>(term(TERM_SCALE, ch)),
            vec4<f32>(term(TERM_MEAN_DY, ch)),
            vec4<f32>(term(TERM_MEAN_DYX, ch)),
        ));
    }
}

@compute @workgroup_size(WG)
fn grad_input_rows(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = vec4_index(li, wid, nwg);
    if (i * 4u < P.numel) {
        let q = row_quad(i);
        store(i, grad_of(
            i,
            term4(TERM_SHIFT, q),
            term4(TERM_MEAN, q),
            term4(TERM_INVSTD, q),
            term4(TERM_SCALE, q),
            term4(TERM_MEAN_DY, q),
            term4(TERM_MEAN_DYX, q),
        ));
    }
}

@compute @workgroup_size(WG)
fn grad_input(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = vec4_index(li, wid, nwg);
    if (i * 4u < P.numel) {
        let e0 = i * 4u;
        store(i, grad_of(
            i,
            term_general(TERM_SHIFT, e0),
            term_general(TERM_MEAN, e0),
            term_general(TERM_INVSTD, e0),
            term_general(TERM_SCALE, e0),
            term_general(TERM_MEAN_DY, e0),
            term_general(TERM_MEAN_DYX, e0),
        ));
    }
}
