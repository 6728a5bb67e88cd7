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
// moments_export:   a shard's merged moments, for statistics across devices.
// moments_apply:    terms (and the running update) from merged moments.
// grads_finalize:   merges the gradient partials: grad_weight = sum(dy * x_hat),
//   grad_bias = sum(dy), and grad_input's line: dx_shift, slope and
//   intercept (dx_line4 in common.wgsl; slope and intercept zero in eval).
// grads_apply:      the same from gradient sums merged across devices.
// grads_rescue, grads_rescue_merge, grads_rescue_finish: the careful
//   sums of channels whose gradient sums came out non-finite (rescue.wgsl,
//   after this file in the finalize module).
// moments_finalize_groups, grads_finalize_groups: moments_finalize and
//   grads_finalize with one workgroup per channel (GPUs, many partial rows).

// (`partials`, read_write for grads_rescue, which carries its sums between
// chunks, is declared with the rescue flag: rescue_flag.wgsl.)
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read_write> terms: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad_weight: array<f32>;
@group(0) @binding(9) var<storage, read_write> grad_bias: array<f32>;
// Cross-device statistics: this shard's (shift, (mean - shift) * scale,
// M2 * scale^2, scale) per channel out; the statistics merged across
// devices in (`merged`), as
// sections of C values: mean (f32 high part), mean (low part: mean - high),
// invstd, unbiased variance (moments_apply), or mean(dy), mean(dy * x_hat),
// sum(dy), sum(dy * x_hat) over all devices (grads_apply).
@group(0) @binding(10) var<storage, read_write> moments_out: array<f32>;
@group(0) @binding(11) var<storage, read> merged: array<f32>;

fn set_term(t: u32, ch: u32, v: f32) {
    terms[t * padded_channels() + ch] = v;
}

fn get_term(t: u32, ch: u32) -> f32 {
    return terms[t * padded_channels() + ch];
}

fn set_packed(kind: u32, ch: u32, v: vec4<f32>) {
    let i = 4u * packed_index(kind, ch);
    terms[i] = v.x;
    terms[i + 1u] = v.y;
    terms[i + 2u] = v.z;
    terms[i + 3u] = v.w;
}

fn affine_of(ch: u32) -> vec2<f32> {
    if ((P().flags & FLAG_AFFINE) != 0u) {
        return vec2<f32>(state[ch], state[P().c + ch]);
    }
    return vec2<f32>(1.0, 0.0);
}

// Writes the TERM_* sections a forward saves (the backward reads them) and
// returns the normalize terms (shift, scale, offset).
fn set_terms(ch: u32, shift: f32, mean: f32, invstd: f32) -> vec3<f32> {
    let wb = affine_of(ch);
    set_term(TERM_SHIFT, ch, shift);
    set_term(TERM_MEAN, ch, mean);
    set_term(TERM_INVSTD, ch, invstd);
    let scale = wb.x * invstd;
    set_term(TERM_SCALE, ch, scale);
    // mean is 0 in eval (the shift is the running mean): offset = bias
    // exactly, even where scale is infinite.
    let offset = select(wb.y - mean * scale, wb.y, mean == 0.0);
    set_term(TERM_OFFSET, ch, offset);
    return vec3<f32>(shift, scale, offset);
}

// set_terms, plus the packed normalize terms.
fn set_normalize_terms(ch: u32, shift: f32, mean: f32, invstd: f32) {
    set_packed(PACKED_NORMALIZE, ch, vec4<f32>(set_terms(ch, shift, mean, invstd), 0.0));
}

// The channel's moment state merged over all partial rows, in order.
fn channel_moments(ch: u32) -> vec4<f32> {
    return channel_merge(ch, 0u, 1u, true);
}

// Two partial states merged: moment states (`moments`), else gradient
// sums (xy).
fn merge_partial(a: vec4<f32>, b: vec4<f32>, moments: bool) -> vec4<f32> {
    if (moments) {
        return merge_moments(a, b);
    }
    return vec4<f32>(a.xy + b.xy, 0.0, 0.0);
}

// Channel ch's partial states of rows first, first + step, ... (each
// row's virtual channels in turn) merged in that order.
fn channel_merge(ch: u32, first: u32, step: u32, moments: bool) -> vec4<f32> {
    var st = vec4<f32>(0.0);
    let width = partial_width();
    let run = virtual_run();
    for (var s = first; s < P().partial_rows; s += step) {
        for (var b = ch * run; b < width; b += P().c * run) {
            for (var v = b; v < b + run; v += 1u) {
                st = merge_partial(st, partials[s * width + v], moments);
            }
        }
    }
    return st;
}

// Partial states per row: the channels, or (P.folds > 1) the virtual
// channels v of the rows reductions of odd C (or C * L), where v / L % C
// is the channel: channel ch's are the runs of L from ch * L, C * L apart.
fn partial_width() -> u32 {
    return P().c * max(P().folds, 1u);
}

// Consecutive virtual channels of one channel: L, or 1 without folds.
fn virtual_run() -> u32 {
    return select(1u, P().l, P().folds > 1u);
}

// running = (1 - m) * running + m * batch, evaluated as
// running + m * (batch - running) with the batch mean given as
// base + rel: (base - running) is exact when they are close, so the new
// running mean carries about one f32 rounding, like PyTorch's f32 buffers.
// PyTorch's own form where that one is not finite but the buffer is
// (running_blend): an infinite buffer stays infinite as in PyTorch, m = 1
// (the first step of a cumulative average) takes the batch's values
// exactly (PyTorch's 0 * old + 1 * batch), and a difference that overflows
// f32 (a running mean of -2e38 and a batch of 2e38) leaves the result
// that PyTorch's form gives.
fn update_running(ch: u32, base: f32, rel: f32, unbiased_var: f32) {
    if ((P().flags & FLAG_UPDATE_RUNNING) != 0u) {
        let m = P().momentum;
        let rm = 2u * P().c + ch;
        let rv = 3u * P().c + ch;
        let old_mean = state[rm];
        let old_var = state[rv];
        state[rm] = running_blend(m, vec4<f32>(old_mean), vec4<f32>((base - old_mean) + rel), vec4<f32>(base + rel)).x;
        state[rv] = running_blend(m, vec4<f32>(old_var), vec4<f32>(unbiased_var - old_var), vec4<f32>(unbiased_var)).x;
    }
}

@compute @workgroup_size(WG)
fn moments_finalize(ids: Ids) {
    let ch = global_index(ids);
    if (ch >= P().c) { return; }
    finish_moments(ch, channel_moments(ch));
}

// Terms and running update of channel ch from its merged moment state.
fn finish_moments(ch: u32, st: vec4<f32>) {
    let r = channel_stats(st, f32(P().count), P().eps);
    let base = stats_base(shift_of(ch), st, r);
    update_running(ch, base.x, base.y, r.unbiased);
    set_normalize_terms(ch, base.x, base.y, r.invstd);
}

// A shard's moments for the host: (shift, mean * u, M2 * u^2, u) with u
// the state's unit, so mean = shift + .y / u and M2 = .z / u^2 in f64;
// NaN/infinite inputs give (shift, PyTorch's mean, NaN, 1).
@compute @workgroup_size(WG)
fn moments_export(ids: Ids) {
    let ch = global_index(ids);
    if (ch >= P().c) { return; }
    export_moments(ch, channel_moments(ch));
}

// Channel ch's merged moments out (moments_export, moments_export_groups).
fn export_moments(ch: u32, st: vec4<f32>) {
    let r = channel_stats(st, f32(P().count), P().eps);
    let nan = bitcast<f32>(0x7fc00000u);
    moments_out[4u * ch] = shift_of(ch);
    moments_out[4u * ch + 1u] = select(st.y, r.mean, r.poisoned);
    moments_out[4u * ch + 2u] = select(st.z, nan, r.poisoned);
    moments_out[4u * ch + 3u] = r.unit;
}

@compute @workgroup_size(WG)
fn moments_apply(ids: Ids) {
    let ch = global_index(ids);
    if (ch >= P().c) { return; }
    var shift = shift_of(ch);
    // (high - shift) is exact when the shift is near the mean; the low part
    // restores what f32 rounding took from the merged mean. Where it
    // overflows (values of both signs near f32's limit) the shift is 0.
    if (!is_finite(merged[ch] - shift)) {
        shift = 0.0;
    }
    let mean = (merged[ch] - shift) + merged[P().c + ch];
    update_running(ch, merged[ch], merged[P().c + ch], merged[3u * P().c + ch]);
    // The host's invstd, subnormal for a std above 2^126: unflushed4.
    set_normalize_terms(ch, shift, mean, unflushed4(vec4<f32>(merged[2u * P().c + ch])).x);
}

@compute @workgroup_size(WG)
fn eval_prepare(ids: Ids) {
    let ch = global_index(ids);
    if (ch >= P().c) { return; }
    let invstd = 1.0 / sqrt(state[3u * P().c + ch] + P().eps);
    set_normalize_terms(ch, state[2u * P().c + ch], 0.0, invstd);
}

@compute @workgroup_size(WG)
fn grads_finalize(ids: Ids) {
    let ch = global_index(ids);
    if (ch >= P().c) { return; }
    finish_grads(ch, channel_merge(ch, 0u, 1u, false).xy);
}

// The *_groups forms: one workgroup per channel, for GPUs with many
// partial rows, where one thread merging them all in turn is a long
// dependent chain (on an H100, 512 partial rows of a (262144, 16) input
// made the forward 4x its best shape's time per byte), and on every
// adapter past a few thousand states per channel (Mesa's llvmpipe ends an
// invocation's loops after 65535 iterations in all: one thread merging
// 12288 rows stopped after about 11000). Thread t merges rows t, t + WG,
// ... in order, then the threads' states merge in a fixed tree: the same
// result run after run.
var<workgroup> finalize_states: array<vec4<f32>, WG>;

// Moment states (`moments`) or gradient sums (xy) of channel ch merged
// over the partial rows by the whole workgroup; every thread gets the
// total.
fn channel_merge_group(ch: u32, t: u32, moments: bool) -> vec4<f32> {
    finalize_states[t] = channel_merge(ch, t, WG, moments);
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (t < half) {
            finalize_states[t] = merge_partial(finalize_states[t], finalize_states[t + half], moments);
        }
        workgroupBarrier();
    }
    return finalize_states[0];
}

@compute @workgroup_size(WG)
fn moments_finalize_groups(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let ch = linear_group(wid, nwg);
    if (ch >= P().c) { return; }
    let st = channel_merge_group(ch, li, true);
    if (li == 0u) {
        finish_moments(ch, st);
    }
}

@compute @workgroup_size(WG)
fn moments_export_groups(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let ch = linear_group(wid, nwg);
    if (ch >= P().c) { return; }
    let st = channel_merge_group(ch, li, true);
    if (li == 0u) {
        export_moments(ch, st);
    }
}

@compute @workgroup_size(WG)
fn grads_finalize_groups(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let ch = linear_group(wid, nwg);
    if (ch >= P().c) { return; }
    let st = channel_merge_group(ch, li, false);
    if (li == 0u) {
        finish_grads(ch, st.xy);
    }
}

// grad_weight, grad_bias and the grad_input terms of channel ch from its
// sums (sum dy, sum dy * x_hat) over the batch; non-finite ones are
// marked for grads_rescue.
fn finish_grads(ch: u32, st: vec2<f32>) {
    finish_totals(ch, plain_totals(st));
    if (!(is_finite(st.x) && is_finite(st.y))) {
        set_term(TERM_DX_SHIFT, ch, bitcast<f32>(0x7fc00000u));
        raise_rescue_flag();
    }
}

// Whether grads_finalize marked channel ch for grads_rescue (a NaN
// dx_shift, which grads_rescue_finish overwrites; a dx_shift that is not
// finite for other reasons comes from sums that are not finite either).
fn marked_for_rescue(ch: u32) -> bool {
    return !is_finite(get_term(TERM_DX_SHIFT, ch));
}

fn finish_totals(ch: u32, t: GradTotals) {
    grad_weight[ch] = t.sdyx;
    grad_bias[ch] = t.sdy;
    set_grad_input_terms(ch, t.mdy, t.mdyx);
}

fn saved_grad_terms(ch: u32) -> vec3<f32> {
    return vec3<f32>(get_term(TERM_SHIFT, ch), get_term(TERM_MEAN, ch), get_term(TERM_INVSTD, ch));
}

// The rescue kernels run on a capped grid (RESCUE_GROUPS workgroups,
// src/gpu/plan/grid.rs; grads_rescue more where its threads would take more
// than four windows each), each thread taking channels (or windows) a grid
// apart: nothing to do (the flag down) costs one load per thread.
fn rescue_stride(ids: Ids) -> u32 {
    return ids.nwg.x * ids.nwg.y * WG;
}

// grad_input = scale * (dy - mean(dy) - x_hat * mean(dy * x_hat)) with
// x_hat = ((x - shift) - mean) * invstd, as scale * (dy + (slope * (x -
// dx_shift) + intercept)): returns (dx_shift, slope, intercept) (dx_line4
// in common.wgsl; slope and intercept 0 in eval).
fn grad_input_line(ch: u32, mean_dy: f32, mean_dyx: f32) -> vec3<f32> {
    let l = dx_line4(
        vec4<f32>(get_term(TERM_SHIFT, ch)),
        vec4<f32>(get_term(TERM_MEAN, ch)),
        vec4<f32>(get_term(TERM_INVSTD, ch)),
        vec4<f32>(mean_dy),
        vec4<f32>(mean_dyx),
    );
    return vec3<f32>(l.shift.x, l.slope.x, l.intercept.x);
}

fn set_grad_input_terms(ch: u32, mean_dy: f32, mean_dyx: f32) {
    let line = grad_input_line(ch, mean_dy, mean_dyx);
    set_term(TERM_DX_SHIFT, ch, line.x);
    set_term(TERM_DX_SLOPE, ch, line.y);
    set_term(TERM_DX_INTERCEPT, ch, line.z);
    set_packed(
        PACKED_GRAD,
        ch,
        vec4<f32>(line.x, get_term(TERM_SCALE, ch), line.y, line.z),
    );
}

@compute @workgroup_size(WG)
fn grads_apply(ids: Ids) {
    let ch = global_index(ids);
    if (ch >= P().c) { return; }
    grad_bias[ch] = merged[2u * P().c + ch];
    grad_weight[ch] = merged[3u * P().c + ch];
    set_grad_input_terms(ch, merged[ch], merged[P().c + ch]);
}
