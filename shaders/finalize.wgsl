// Per-channel finalize steps, one thread per channel, no host round trip.
//
// `chan` holds two vec4 per channel, consumed by the elementwise kernels:
//   chan[2c]     = (shift, mean - shift, invstd, weight * invstd)
//   chan[2c + 1] = (bias, mean(dy), mean(dy * x_hat), 0)
// `state` is the module's parameter buffer: weight | bias | running_mean |
// running_var, C values each.
//
// moments_finalize: merges the moment partials in segment order, computes the
//   batch mean and biased variance, invstd = 1 / sqrt(var + eps), and (when
//   training with running statistics) running = (1 - m) * running + m * batch
//   with the unbiased variance M2 / (n - 1).
// eval_prepare:     the same per-channel terms from the running statistics.
// grads_finalize:   merges the gradient partials: grad_weight = sum(dy * x_hat),
//   grad_bias = sum(dy), and the means used by grad_input (zero in eval).

@group(0) @binding(2) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> chan: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> grad_weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_bias: array<f32>;

fn affine_of(ch: u32) -> vec2<f32> {
    if ((P.flags & FLAG_AFFINE) != 0u) {
        return vec2<f32>(state[ch], state[P.c + ch]);
    }
    return vec2<f32>(1.0, 0.0);
}

@compute @workgroup_size(WG)
fn moments_finalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    for (var ch = linear_group(wid, nwg) * WG + li; ch < P.c; ch += group_count(nwg) * WG) {
        moments_finalize_channel(ch);
    }
}

fn moments_finalize_channel(ch: u32) {
    var st = vec4<f32>(0.0);
    for (var s = 0u; s < P.segments; s += 1u) {
        st = merge_moments(st, partials[s * P.c + ch]);
    }
    let n = f32(P.m);
    var mean = st.y;
    if (!is_finite(mean)) {
        // Welford's mean turns NaN on +inf values; PyTorch's sum / n gives inf.
        mean = st.w / n;
    }
    let shift = shift_of(ch);
    let invstd = 1.0 / sqrt(st.z / n + P.eps);
    if ((P.flags & FLAG_UPDATE_RUNNING) != 0u) {
        let m = P.momentum;
        let rm = 2u * P.c + ch;
        let rv = 3u * P.c + ch;
        state[rm] = (1.0 - m) * state[rm] + m * (shift + mean);
        state[rv] = (1.0 - m) * state[rv] + m * (st.z / (n - 1.0));
    }
    let wb = affine_of(ch);
    chan[2u * ch] = vec4<f32>(shift, mean, invstd, wb.x * invstd);
    chan[2u * ch + 1u] = vec4<f32>(wb.y, 0.0, 0.0, 0.0);
}

@compute @workgroup_size(WG)
fn eval_prepare(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    for (var ch = linear_group(wid, nwg) * WG + li; ch < P.c; ch += group_count(nwg) * WG) {
        eval_prepare_channel(ch);
    }
}

fn eval_prepare_channel(ch: u32) {
    let invstd = 1.0 / sqrt(state[3u * P.c + ch] + P.eps);
    let wb = affine_of(ch);
    chan[2u * ch] = vec4<f32>(state[2u * P.c + ch], 0.0, invstd, wb.x * invstd);
    chan[2u * ch + 1u] = vec4<f32>(wb.y, 0.0, 0.0, 0.0);
}

@compute @workgroup_size(WG)
fn grads_finalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    for (var ch = linear_group(wid, nwg) * WG + li; ch < P.c; ch += group_count(nwg) * WG) {
        grads_finalize_channel(ch);
    }
}

fn grads_finalize_channel(ch: u32) {
    var st = vec2<f32>(0.0);
    for (var s = 0u; s < P.segments; s += 1u) {
        st += partials[s * P.c + ch].xy;
    }
    grad_weight[ch] = st.y;
    grad_bias[ch] = st.x;
    var c1 = chan[2u * ch + 1u];
    if ((P.flags & FLAG_BATCH_STATS) != 0u) {
        let n = f32(P.m);
        c1.y = st.x / n;
        c1.z = st.y / n;
    } else {
        c1.y = 0.0;
        c1.z = 0.0;
    }
    chan[2u * ch + 1u] = c1;
}
