// Column statistics for (N, C) inputs with C % 4 != 0 and few rows next to
// their channels (wide layers, small batches): one thread owns one channel
// over all N rows, so no partial states, no merge and no finalize dispatch
// are needed; the general elementwise pass follows (threads storing single
// values would share the vec4s of the output). C % 4 == 0 takes the fused
// kernels of columns4.wgsl instead.
//
// moments_columns: batch statistics, the terms and the running update
//   exactly as moments_finalize (finalize.wgsl).
// grads_columns:   (sum dy, sum dy * x_hat) -> grad_weight, grad_bias and
//   the grad_input terms, as grads_finalize.
// Channel ch's rows are C values apart; there is one chunk (lead = 0).

// Value e of x, and of dy.
fn x_at(e: u32) -> f32 {
    return pick(vec4<f32>(x4[e / 4u]), e % 4u);
}

fn dy_at(e: u32) -> f32 {
    return pick(vec4<f32>(dy4[e / 4u]), e % 4u);
}

// Channel ch's moment state over its N values (see rows_moments for the
// fast and careful passes).
fn column_moments(ch: u32, shift: f32) -> vec4<f32> {
    let fast = column_fold(ch, shift, false);
    if (is_finite(fast.y) && is_finite(fast.z)) {
        return fast;
    }
    return column_fold(ch, shift, true);
}

fn column_fold(ch: u32, shift: f32, careful: bool) -> vec4<f32> {
    var f = fold_start(shift);
    for (var r = 0u; r < P.n; r += 1u) {
        let x = x_at(r * P.c + ch);
        var v = x * f.u - f.shu;
        if (careful && !in_range(vec4<f32>(v))) {
            f = fold_absorb(f, vec4<f32>(v, 0.0, 0.0, 0.0), shift);
            v = x * f.u - f.shu;
        }
        f.acc = welford(f.acc, v);
    }
    return f.acc;
}

@compute @workgroup_size(WG)
fn moments_columns(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P.c) {
        return;
    }
    // The shift: the channel's first value where finite (as shift_of).
    let first = x_at(ch);
    let shift = select(0.0, first, is_finite(first));
    let st = column_moments(ch, shift);
    let r = channel_stats(st, f32(P.count), P.eps);
    let base = stats_base(shift, st, r);
    update_running(ch, base.x, base.y, r.unbiased);
    set_normalize_terms(ch, base.x, base.y, r.invstd);
}

@compute @workgroup_size(WG)
fn grads_columns(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P.c) {
        return;
    }
    let a = vec3<f32>(get_term(TERM_SHIFT, ch), get_term(TERM_MEAN, ch), get_term(TERM_INVSTD, ch));
    var st = vec2<f32>(0.0);
    for (var r = 0u; r < P.n; r += 1u) {
        let e = r * P.c + ch;
        let g = dy_at(e);
        st += vec2<f32>(g, g * x_hat4(vec4<f32>(x_at(e)), vec4<f32>(a.x), vec4<f32>(a.y), vec4<f32>(a.z)).x);
    }
    finish_grads(ch, st);
}
