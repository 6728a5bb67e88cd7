// Elementwise passes, one vec4 of the tensor per invocation, using the
// per-channel terms in `chan` (see finalize.wgsl):
//
// normalize:  y  = ((x - shift) - (mean - shift)) * (weight * invstd) + bias
// grad_input: dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))
//             (in eval the two means are zero: dx = dy * weight * invstd)
//
// The `*4` entry points serve layouts where a vec4 needs at most one channel
// lookup (MODE_PLANES: L % 4 == 0; MODE_ROWS: (N, C) with C % 4 == 0); the
// others walk the four values' channels one by one.

@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> chan: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

// Channel of element e of the chunk.
fn channel_of(e: u32) -> u32 {
    return ((e + P.lead) / P.l) % P.c;
}

// Per-channel terms of the four values of vec4 i, one vec4 per term:
// [shift, mean - shift, invstd, weight * invstd, bias, mean dy, mean dy*x_hat].
struct Terms {
    k: vec4<f32>,
    m: vec4<f32>,
    invstd: vec4<f32>,
    a: vec4<f32>,
    b: vec4<f32>,
    mdy: vec4<f32>,
    mdx: vec4<f32>,
}

fn terms_of(ch: u32, t: ptr<function, Terms>, k: u32) {
    let p = chan[2u * ch];
    let q = chan[2u * ch + 1u];
    (*t).k[k] = p.x;
    (*t).m[k] = p.y;
    (*t).invstd[k] = p.z;
    (*t).a[k] = p.w;
    (*t).b[k] = q.x;
    (*t).mdy[k] = q.y;
    (*t).mdx[k] = q.z;
}

// Terms for the vec4 starting at element e0 in the fast layouts.
fn terms_fast(e0: u32) -> Terms {
    var t: Terms;
    if (P.mode == MODE_PLANES) {
        let ch = channel_of(e0);
        let p = chan[2u * ch];
        let q = chan[2u * ch + 1u];
        t.k = vec4<f32>(p.x);
        t.m = vec4<f32>(p.y);
        t.invstd = vec4<f32>(p.z);
        t.a = vec4<f32>(p.w);
        t.b = vec4<f32>(q.x);
        t.mdy = vec4<f32>(q.y);
        t.mdx = vec4<f32>(q.z);
    } else {
        let c0 = (e0 + P.lead) % P.c;
        for (var k = 0u; k < 4u; k += 1u) {
            terms_of(c0 + k, &t, k);
        }
    }
    return t;
}

// Terms for any layout: each of the four values' channel in turn.
fn terms_general(e0: u32) -> Terms {
    var t: Terms;
    let q = (e0 + P.lead) / P.l;
    var l = (e0 + P.lead) - q * P.l;
    var ch = q % P.c;
    for (var k = 0u; k < 4u; k += 1u) {
        terms_of(ch, &t, k);
        l += 1u;
        if (l == P.l) {
            l = 0u;
            ch += 1u;
            if (ch == P.c) {
                ch = 0u;
            }
        }
    }
    return t;
}

fn normalize_terms(i: u32, t: Terms) {
    out[i] = ((x4[i] - t.k) - t.m) * t.a + t.b;
}

fn grad_input_terms(i: u32, t: Terms) {
    let xhat = ((x4[i] - t.k) - t.m) * t.invstd;
    out[i] = t.a * (dy4[i] - t.mdy - xhat * t.mdx);
}

// Values past numel in the last vec4 land in the output's padding. Each
// invocation takes the vec4 at its linear id and, only when the grid was
// clamped to the device's limits, every group_count * WG-th one after it.

@compute @workgroup_size(WG)
fn normalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let first = linear_group(wid, nwg) * WG + li;
    if (first * 4u < P.numel) {
        let i = first;
        normalize_terms(i, terms_general(i * 4u));
    }
    if ((P.flags & FLAG_STRIDED) != 0u) {
        for (var i = first + group_count(nwg) * WG; i * 4u < P.numel; i += group_count(nwg) * WG) {
            normalize_terms(i, terms_general(i * 4u));
        }
    }
}

@compute @workgroup_size(WG)
fn normalize4(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let first = linear_group(wid, nwg) * WG + li;
    if (first * 4u < P.numel) {
        let i = first;
        normalize_terms(i, terms_fast(i * 4u));
    }
    if ((P.flags & FLAG_STRIDED) != 0u) {
        for (var i = first + group_count(nwg) * WG; i * 4u < P.numel; i += group_count(nwg) * WG) {
            normalize_terms(i, terms_fast(i * 4u));
        }
    }
}

@compute @workgroup_size(WG)
fn grad_input(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let first = linear_group(wid, nwg) * WG + li;
    if (first * 4u < P.numel) {
        let i = first;
        grad_input_terms(i, terms_general(i * 4u));
    }
    if ((P.flags & FLAG_STRIDED) != 0u) {
        for (var i = first + group_count(nwg) * WG; i * 4u < P.numel; i += group_count(nwg) * WG) {
            grad_input_terms(i, terms_general(i * 4u));
        }
    }
}

@compute @workgroup_size(WG)
fn grad_input4(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let first = linear_group(wid, nwg) * WG + li;
    if (first * 4u < P.numel) {
        let i = first;
        grad_input_terms(i, terms_fast(i * 4u));
    }
    if ((P.flags & FLAG_STRIDED) != 0u) {
        for (var i = first + group_count(nwg) * WG; i * 4u < P.numel; i += group_count(nwg) * WG) {
            grad_input_terms(i, terms_fast(i * 4u));
        }
    }
}
