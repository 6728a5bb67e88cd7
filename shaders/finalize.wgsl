// Per-channel finalize steps, one thread per channel, no host round trip.
//
// They write the per-channel terms (TERM_* sections of `terms`, see
// common.wgsl) that the elementwise and gradient kernels read. `state` is
// the module's parameter buffer: weight | bias | running_mean | running_var,
// C values each.
//
// moments_finalize: merges the moment partials in segment order, computes the
//   batch mean and biased variance, invstd = 1 / sqrt(var + eps), and (when
//   training with running statistics) running = (1 - m) * running + m * batch
//   with the unbiased variance M2 / (n - 1).
// eval_prepare:     the same terms from the running statistics.
// grads_finalize:   merges the gradient partials: grad_weight = sum(dy * x_hat),
//   grad_bias = sum(dy), and the means used by grad_input (zero in eval).

@group(0) @binding(2) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> terms: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_bias: array<f32>;

fn set_term(t: u32, ch: u32, v: f32) {
    terms[t * padded_channels() + ch] = v;
}

fn affine_of(ch: u32) -> vec2<f32> {
    if ((P.flags & FLAG_AFFINE) != 0u) {
        return vec2<f32>(state[ch], state[P.c + ch]);
    }
    return vec2<f32>(1.0, 0.0);
}

fn set_normalize_terms(ch: u32, shift: f32, mean: f32, invstd: f32) {
    let wb = affine_of(ch);
    set_term(TERM_SHIFT, ch, shift);
    set_term(TERM_MEAN, ch, mean);
    set_term(TERM_INVSTD, ch, invstd);
    set_term(TERM_SCALE, ch, wb.x * invstd);
    set_term(TERM_BIAS, ch, wb.y);
}

fn channel_index(li: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return linear_group(wid, nwg) * WG + li;
}

@compute @workgroup_size(WG)
fn moments_finalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ch = channel_index(li, wid, nwg);
    if (ch >= P.c) {
        return;
    }
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
    set_normalize_terms(ch, shift, mean, invstd);
}

@compute @workgroup_size(WG)
fn eval_prepare(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ch = channel_index(li, wid, nwg);
    if (ch >= P.c) {
        return;
    }
    let invstd = 1.0 / sqrt(state[3u * P.c + ch] + P.eps);
    set_normalize_terms(ch, state[2u * P.c + ch], 0.0, invstd);
}

@compute @workgroup_size(WG)
fn grads_finalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ch = channel_index(li, wid, nwg);
    if (ch >= P.c) {
        return;
    }
    var st = vec2<f32>(0.0);
    for (var s = 0u; s < P.segments; s += 1u) {
        st += partials[s * P.c + ch].xy;
    }
    grad_weight[ch] = st.y;
    grad_bias[ch] = st.x;
    var mean_dy = 0.0;
    var mean_dyx = 0.0;
    if ((P.flags & FLAG_BATCH_STATS) != 0u) {
        let n = f32(P.m);
        mean_dy = st.x / n;
        mean_dyx = st.y / n;
    }
    set_term(TERM_MEAN_DY, ch, mean_dy);
    set_term(TERM_MEAN_DYX, ch, mean_dyx);
}
