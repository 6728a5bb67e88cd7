// Column kernels for (N, C) inputs with C % 4 != 0 and few rows next to
// their channels (wide layers, small batches): one thread owns one channel
// over all N rows, so no partial states, no merge and no finalize dispatch
// are needed, and the whole op is one dispatch. Each thread reads and
// writes single values (one component of a vec4; its neighbours, the next
// channels, take the others), so the per-channel terms stay in registers.
// C % 4 == 0 takes the four-channel kernels of columns4.wgsl instead.
//
// forward_columns:  batch statistics (or, in eval, the running
//   statistics), the saved terms and the running update exactly as
//   moments_finalize / eval_prepare (finalize.wgsl), then
//   y = act((x - shift) * scale + offset + residual) (epilogue.wgsl).
// backward_columns: (sum dy, sum dy * x_hat) -> grad_weight, grad_bias and
//   the grad_input terms as grads_finalize, then dx = scale * dy + slope *
//   (x - shift) + intercept.
// grads_columns:    the same without dx.
// Channel ch's rows are C values apart; there is one chunk (lead = 0).
// forward_columns_regs / backward_columns_regs: the same with the channel's
// values kept in registers, x (and dy) read once, up to REG_ROWS_LARGE
// rows (columns4.wgsl; CPU adapters).

// The output and the residual as single values: each thread writes its own
// elements (separate memory locations; a write to one component of a vec4
// may touch the whole vec4 in WGSL's memory model).
@group(0) @binding(6) var<storage, read_write> out: array<elem>;
@group(0) @binding(12) var<storage, read> residual1: array<elem>;

// Value e of the output, through the epilogue.
fn store_normalized1(e: u32, v: f32) {
    var r = 0.0;
    if ((EPILOGUE & EPILOGUE_RESIDUAL) != 0u) {
        r = f32(residual1[e]);
    }
    store1(e, epilogue_of(vec4<f32>(v), vec4<f32>(r)).x);
}

fn store1(e: u32, v: f32) {
    out[e] = elem(v);
}

// Value e of x, and of dy (one component read, not its vec4).
fn x_at(e: u32) -> f32 {
    return f32(x4[e / 4u][e % 4u]);
}

fn dy_at(e: u32) -> f32 {
    return f32(dy4[e / 4u][e % 4u]);
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
    for (var r = 0u; r < P().n; r += 1u) {
        let x = x_at(r * P().c + ch);
        var v = x * f.u - f.shu;
        if (careful && !in_range(vec4<f32>(v))) {
            f = fold_absorb(f, vec4<f32>(v, 0.0, 0.0, 0.0), shift);
            v = x * f.u - f.shu;
        }
        f.acc = welford(f.acc, v);
    }
    return f.acc;
}

// Channel ch's normalize terms (shift, scale, offset), saving the terms a
// backward reads: batch statistics with the running update, or the
// running statistics.
fn column_terms(ch: u32) -> vec3<f32> {
    if ((P().flags & FLAG_BATCH_STATS) != 0u) {
        // The shift: the channel's first value where finite (as shift_of).
        let first = x_at(ch);
        let shift = select(0.0, first, is_finite(first));
        let st = column_moments(ch, shift);
        let r = channel_stats(st, f32(P().count), P().eps);
        let base = stats_base(shift, st, r);
        update_running(ch, base.x, base.y, r.unbiased);
        return set_terms(ch, base.x, base.y, r.invstd);
    }
    let invstd = 1.0 / sqrt(state[3u * P().c + ch] + P().eps);
    return set_terms(ch, state[2u * P().c + ch], 0.0, invstd);
}

@compute @workgroup_size(WG)
fn forward_columns(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c) {
        return;
    }
    let t = column_terms(ch);
    for (var r = 0u; r < P().n; r += 1u) {
        let e = r * P().c + ch;
        store_normalized1(e, shifted_affine4(vec4<f32>(x_at(e)), vec4<f32>(t.x), vec4<f32>(t.y), vec4<f32>(t.z)).x);
    }
}

// Channel ch's (sum dy, sum dy * x_hat) with its saved terms a = (shift,
// mean - shift, invstd).
fn column_grad_sums(ch: u32, a: vec3<f32>) -> vec2<f32> {
    var st = vec2<f32>(0.0);
    for (var r = 0u; r < P().n; r += 1u) {
        let e = r * P().c + ch;
        let g = dy_at(e);
        st += vec2<f32>(g, g * x_hat4(vec4<f32>(x_at(e)), vec4<f32>(a.x), vec4<f32>(a.y), vec4<f32>(a.z)).x);
    }
    return st;
}

fn saved_terms(ch: u32) -> vec3<f32> {
    return vec3<f32>(get_term(TERM_SHIFT, ch), get_term(TERM_MEAN, ch), get_term(TERM_INVSTD, ch));
}

@compute @workgroup_size(WG)
fn backward_columns(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c) {
        return;
    }
    let a = saved_terms(ch);
    let st = column_grad_sums(ch, a);
    grad_weight[ch] = st.y;
    grad_bias[ch] = st.x;
    let n = f32(P().count);
    let line = grad_input_line(ch, st.x / n, st.y / n);
    let scale = get_term(TERM_SCALE, ch);
    for (var r = 0u; r < P().n; r += 1u) {
        let e = r * P().c + ch;
        let dx = grad_input4(vec4<f32>(x_at(e)), vec4<f32>(dy_at(e)), vec4<f32>(a.x), vec4<f32>(scale), vec4<f32>(line.x), vec4<f32>(line.y));
        store1(e, dx.x);
    }
}

@compute @workgroup_size(WG)
fn grads_columns(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c) {
        return;
    }
    finish_grads(ch, column_grad_sums(ch, saved_terms(ch)));
}


struct Regs1 {
    v: array<f32, REG_ROWS_LARGE>,
}

// forward_columns with the channel's values in registers (read once).
@compute @workgroup_size(WG)
fn forward_columns_regs(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c || P().n > REG_ROWS_LARGE) {
        return;
    }
    var xs: Regs1;
    for (var r = 0u; r < P().n; r += 1u) {
        xs.v[r] = x_at(r * P().c + ch);
    }
    var t: vec3<f32>;
    if ((P().flags & FLAG_BATCH_STATS) != 0u) {
        // The shift: the channel's first value where finite (as shift_of).
        let shift = select(0.0, xs.v[0], is_finite(xs.v[0]));
        var f = fold_start(shift);
        for (var r = 0u; r < P().n; r += 1u) {
            f.acc = welford(f.acc, xs.v[r] * f.u - f.shu);
        }
        var st = f.acc;
        if (!(is_finite(st.y) && is_finite(st.z))) {
            st = column_fold(ch, shift, true);
        }
        let r = channel_stats(st, f32(P().count), P().eps);
        let base = stats_base(shift, st, r);
        update_running(ch, base.x, base.y, r.unbiased);
        t = set_terms(ch, base.x, base.y, r.invstd);
    } else {
        let invstd = 1.0 / sqrt(state[3u * P().c + ch] + P().eps);
        t = set_terms(ch, state[2u * P().c + ch], 0.0, invstd);
    }
    for (var r = 0u; r < P().n; r += 1u) {
        store_normalized1(r * P().c + ch, shifted_affine4(vec4<f32>(xs.v[r]), vec4<f32>(t.x), vec4<f32>(t.y), vec4<f32>(t.z)).x);
    }
}

// backward_columns with x and dy in registers (read once).
@compute @workgroup_size(WG)
fn backward_columns_regs(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c || P().n > REG_ROWS_LARGE) {
        return;
    }
    let a = saved_terms(ch);
    var xs: Regs1;
    var gs: Regs1;
    var st = vec2<f32>(0.0);
    for (var r = 0u; r < P().n; r += 1u) {
        let e = r * P().c + ch;
        xs.v[r] = x_at(e);
        gs.v[r] = dy_at(e);
        st += vec2<f32>(gs.v[r], gs.v[r] * x_hat4(vec4<f32>(xs.v[r]), vec4<f32>(a.x), vec4<f32>(a.y), vec4<f32>(a.z)).x);
    }
    grad_weight[ch] = st.y;
    grad_bias[ch] = st.x;
    let n = f32(P().count);
    let line = grad_input_line(ch, st.x / n, st.y / n);
    let scale = get_term(TERM_SCALE, ch);
    for (var r = 0u; r < P().n; r += 1u) {
        let dx = grad_input4(vec4<f32>(xs.v[r]), vec4<f32>(gs.v[r]), vec4<f32>(a.x), vec4<f32>(scale), vec4<f32>(line.x), vec4<f32>(line.y));
        store1(r * P().c + ch, dx.x);
    }
}
