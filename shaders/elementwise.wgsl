// Elementwise passes over the whole tensor, four consecutive values per
// thread, using the per-channel terms in `chan` (see finalize.wgsl):
//
// normalize:  y  = ((x - shift) - (mean - shift)) * (weight * invstd) + bias
// grad_input: dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))
//             (in eval the two means are zero: dx = dy * weight * invstd)

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> chan: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn normalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    for (var i = linear_group(wid, nwg) * WG + li; i * 4u < P.numel; i += group_count(nwg) * WG) {
        normalize_vec4(i);
    }
}

fn normalize_vec4(i: u32) {
    let e0 = i * 4u;
    let q = (e0 + P.lead) / P.l;
    var l = (e0 + P.lead) - q * P.l;
    var ch = q % P.c;
    var r = vec4<f32>(0.0);
    for (var k = 0u; k < 4u; k += 1u) {
        let e = e0 + k;
        if (e < P.numel) {
            let a = chan[2u * ch];
            r[k] = ((x[e] - a.x) - a.y) * a.w + chan[2u * ch + 1u].x;
        }
        l += 1u;
        if (l == P.l) {
            l = 0u;
            ch += 1u;
            if (ch == P.c) {
                ch = 0u;
            }
        }
    }
    out[i] = r;
}

@compute @workgroup_size(WG)
fn grad_input(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    for (var i = linear_group(wid, nwg) * WG + li; i * 4u < P.numel; i += group_count(nwg) * WG) {
        grad_input_vec4(i);
    }
}

fn grad_input_vec4(i: u32) {
    let e0 = i * 4u;
    let q = (e0 + P.lead) / P.l;
    var l = (e0 + P.lead) - q * P.l;
    var ch = q % P.c;
    var r = vec4<f32>(0.0);
    for (var k = 0u; k < 4u; k += 1u) {
        let e = e0 + k;
        if (e < P.numel) {
            let a = chan[2u * ch];
            let b = chan[2u * ch + 1u];
            let xhat = ((x[e] - a.x) - a.y) * a.z;
            r[k] = a.w * (dy[e] - b.y - xhat * b.z);
        }
        l += 1u;
        if (l == P.l) {
            l = 0u;
            ch += 1u;
            if (ch == P.c) {
                ch = 0u;
            }
        }
    }
    out[i] = r;
}
