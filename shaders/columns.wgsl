// Column kernels for (N, C) inputs with C % 4 != 0 and few rows next to
// their channels (wide layers, small batches): one thread owns one channel
// over all N rows, so no partial states, no merge and no finalize dispatch
// are needed, and the whole op is one dispatch (a backward past 2^16
// values: then backward_columns_rescue, below). Each thread reads and
// writes single values (one component of a vec4; its neighbours, the next
// channels, take the others), so the per-channel terms stay in registers.
// C % 4 == 0 takes the four-channel kernels of columns4.wgsl instead.
//
// forward_columns:  batch statistics (or, in eval, the running
//   statistics), the saved terms and the running update exactly as
//   moments_finalize / eval_prepare (finalize.wgsl), then
//   y = act((x - shift) * scale + offset + residual) (epilogue.wgsl).
// backward_columns: (sum dy, sum dy * x_hat) -> grad_weight, grad_bias and
//   the grad_input terms as grads_finalize, then dx = scale * (dy + slope *
//   (x - shift) + intercept).
// grads_columns:    the same without dx (sums that came out non-finite:
//   marked for grads_rescue as by grads_finalize).
// backward_columns_rescue: after backward_columns* (or backward_columns4*),
//   where one raised the rescue flag (rescue_flag.wgsl): the channels of
//   non-finite sums again, carefully, with their dx.
// Small tensors (INLINE_RESCUE) keep the op one dispatch: their backward
// and grads kernels redo such sums themselves.
// Channel ch's rows are C values apart; there is one chunk (lead = 0).
// The *_regs64 and *_regs256 entry points: the training forward and the
// backward with the channel's values kept in registers, x (and dy) read
// once, up to 64 and 256 rows (CPU adapters; see columns4.wgsl).

// The output and the residual as single values: each thread writes its own
// elements (separate memory locations; a write to one component of a vec4
// may touch the whole vec4 in WGSL's memory model).
@group(0) @binding(6) var<storage, read_write> out: array<elem>;
@group(0) @binding(12) var<storage, read> residual1: array<elem>;

// INLINE_RESCUE and COLUMN_WG, as in columns4.wgsl (never in one module
// with it; backward_columns_rescue keeps WG invocations).
override INLINE_RESCUE: bool = false;
override COLUMN_WG: u32 = 256u;

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


fn column_fold(ch: u32, shift: f32, careful: bool) -> vec4<f32> {
    var f = fold_start(shift);
    for (var r = 0u; r < P().n; r += 1u) {
        let x = x_at(r * P().c + ch);
        var v = fma(x, f.u, -f.shu);
        if (careful && !in_range(vec4<f32>(v))) {
            f = fold_absorb(f, vec4<f32>(v, 0.0, 0.0, 0.0), shift);
            v = fma(x, f.u, -f.shu);
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
        let shift = column_shift(ch);
        return column_batch_terms(ch, shift, column_fold(ch, shift, false));
    }
    let invstd = 1.0 / sqrt(state[3u * P().c + ch] + P().eps);
    return set_terms(ch, state[2u * P().c + ch], 0.0, invstd);
}

@compute @workgroup_size(COLUMN_WG)
fn forward_columns(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c) {
        return;
    }
    let t = column_terms(ch);
    for (var r = 0u; r < P().n; r += 1u) {
        normalize_value(ch, r, x_at(r * P().c + ch), t);
    }
}

// Channel ch's (sum dy, sum dy * x_hat) with its saved terms a = (shift,
// mean - shift, invstd).
fn column_grad_sums(ch: u32, a: vec3<f32>) -> vec2<f32> {
    var st = vec2<f32>(0.0);
    for (var r = 0u; r < P().n; r += 1u) {
        let e = r * P().c + ch;
        st += grad_term1(x_at(e), dy_at(e), a);
    }
    return st;
}

@compute @workgroup_size(COLUMN_WG)
fn backward_columns(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c) {
        return;
    }
    let a = saved_grad_terms(ch);
    let l = grad_line1(ch, a, column_grad_sums(ch, a));
    for (var r = 0u; r < P().n; r += 1u) {
        let e = r * P().c + ch;
        grad_value1(ch, r, x_at(e), dy_at(e), l);
    }
}

@compute @workgroup_size(COLUMN_WG)
fn grads_columns(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c) {
        return;
    }
    let a = saved_grad_terms(ch);
    let st = column_grad_sums(ch, a);
    if (INLINE_RESCUE) {
        finish_totals(ch, grad_totals1(ch, a, st));
    } else {
        finish_grads(ch, st);
    }
}

// After any column backward (every lane width): the channels whose f32
// sums came out non-finite (their grad_weight or grad_bias, written as
// they were), summed again carefully (careful_channel), with their
// grad_weight, grad_bias and dx; on the rescue's capped grid
// (rescue_stride), returning at once where the flag is down.
@compute @workgroup_size(WG)
fn backward_columns_rescue(ids: Ids) {
    if (!rescue_flag_up()) {
        return;
    }
    for (var ch = global_index(ids); ch < P().c; ch += rescue_stride(ids)) {
        if (is_finite(grad_weight[ch]) && is_finite(grad_bias[ch])) {
            continue;
        }
        let a = saved_grad_terms(ch);
        let l = totals_line1(ch, a, careful_totals(careful_channel(ch, a)));
        for (var r = 0u; r < P().n; r += 1u) {
            let e = r * P().c + ch;
            grad_value1(ch, r, x_at(e), dy_at(e), l);
        }
    }
}

struct Regs1x64 {
    v: array<f32, REG_ROWS_64>,
}

struct Regs1x256 {
    v: array<f32, REG_ROWS_256>,
}

// The shift of channel ch: its first value where finite (as shift_of).
fn column_shift(ch: u32) -> f32 {
    let first = x_at(ch);
    return select(0.0, first, is_finite(first));
}

// One value into the fast fold.
fn column_step(f: Fold, x: f32) -> Fold {
    var g = f;
    g.acc = welford(f.acc, fma(x, f.u, -f.shu));
    return g;
}

// Channel ch's terms (shift, scale, offset) from batch statistics, with
// the running update: the fast fold's state `fast`, or, where that is not
// usable, the careful pass over x (see rows_moments).
fn column_batch_terms(ch: u32, shift: f32, fast: vec4<f32>) -> vec3<f32> {
    var st = fast;
    if (!(is_finite(st.y) && is_finite(st.z))) {
        st = column_fold(ch, shift, true);
    }
    let r = channel_stats(st, f32(P().count), P().eps);
    let base = stats_base(shift, st, r);
    update_running(ch, base.x, base.y, r.unbiased);
    return set_terms(ch, base.x, base.y, r.invstd);
}

fn normalize_value(ch: u32, r: u32, x: f32, t: vec3<f32>) {
    store_normalized1(r * P().c + ch, shifted_affine4(vec4<f32>(x), vec4<f32>(t.x), vec4<f32>(t.y), vec4<f32>(t.z)).x);
}

// A backward channel's saved terms a = (shift, mean - shift, invstd),
// scale and grad_input line, once its sums are written.
struct GradLine1 {
    a: vec3<f32>,
    scale: f32,
    line: vec3<f32>, // (dx_shift, slope, intercept): grad_input_line
}

fn grad_term1(x: f32, g: f32, a: vec3<f32>) -> vec2<f32> {
    return vec2<f32>(g, g * x_hat4(vec4<f32>(x), vec4<f32>(a.x), vec4<f32>(a.y), vec4<f32>(a.z)).x);
}

// From the f32 sums st: with INLINE_RESCUE, redone here where they are
// not finite (grad_totals1); else raising the rescue flag there
// (grad_weight and grad_bias, written as they are, tell
// backward_columns_rescue to redo the channel).
fn grad_line1(ch: u32, a: vec3<f32>, st: vec2<f32>) -> GradLine1 {
    if (INLINE_RESCUE) {
        return totals_line1(ch, a, grad_totals1(ch, a, st));
    }
    if (!(is_finite(st.x) && is_finite(st.y))) {
        raise_rescue_flag();
    }
    return totals_line1(ch, a, plain_totals(st));
}

// Writes grad_weight and grad_bias from the totals t; returns the line.
fn totals_line1(ch: u32, a: vec3<f32>, t: GradTotals) -> GradLine1 {
    grad_weight[ch] = t.sdyx;
    grad_bias[ch] = t.sdy;
    return GradLine1(a, get_term(TERM_SCALE, ch), grad_input_line(ch, t.mdy, t.mdyx));
}

fn grad_value1(ch: u32, r: u32, x: f32, g: f32, l: GradLine1) {
    let dx = grad_input4(vec4<f32>(x), vec4<f32>(g), vec4<f32>(l.line.x), vec4<f32>(l.scale), vec4<f32>(l.line.y), vec4<f32>(l.line.z));
    store1(r * P().c + ch, dx.x);
}

// Training forward with up to REG_ROWS_64 (REG_ROWS_256) values in
// registers: x read once.
@compute @workgroup_size(COLUMN_WG)
fn forward_columns_regs64(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c || P().n > REG_ROWS_64) {
        return;
    }
    let shift = column_shift(ch);
    var xs: Regs1x64;
    var f = fold_start(shift);
    for (var r = 0u; r < P().n; r += 1u) {
        xs.v[r] = x_at(r * P().c + ch);
        f = column_step(f, xs.v[r]);
    }
    let t = column_batch_terms(ch, shift, f.acc);
    for (var r = 0u; r < P().n; r += 1u) {
        normalize_value(ch, r, xs.v[r], t);
    }
}

@compute @workgroup_size(COLUMN_WG)
fn forward_columns_regs256(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c || P().n > REG_ROWS_256) {
        return;
    }
    let shift = column_shift(ch);
    var xs: Regs1x256;
    var f = fold_start(shift);
    for (var r = 0u; r < P().n; r += 1u) {
        xs.v[r] = x_at(r * P().c + ch);
        f = column_step(f, xs.v[r]);
    }
    let t = column_batch_terms(ch, shift, f.acc);
    for (var r = 0u; r < P().n; r += 1u) {
        normalize_value(ch, r, xs.v[r], t);
    }
}

// Backward with up to REG_ROWS_64 (REG_ROWS_256) values of x and dy in
// registers: each read once.
@compute @workgroup_size(COLUMN_WG)
fn backward_columns_regs64(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c || P().n > REG_ROWS_64) {
        return;
    }
    let a = saved_grad_terms(ch);
    var xs: Regs1x64;
    var gs: Regs1x64;
    var st = vec2<f32>(0.0);
    for (var r = 0u; r < P().n; r += 1u) {
        xs.v[r] = x_at(r * P().c + ch);
        gs.v[r] = dy_at(r * P().c + ch);
        st += grad_term1(xs.v[r], gs.v[r], a);
    }
    let l = grad_line1(ch, a, st);
    for (var r = 0u; r < P().n; r += 1u) {
        grad_value1(ch, r, xs.v[r], gs.v[r], l);
    }
}

@compute @workgroup_size(COLUMN_WG)
fn backward_columns_regs256(ids: Ids) {
    let ch = column_lane(ids);
    if (ch >= P().c || P().n > REG_ROWS_256) {
        return;
    }
    let a = saved_grad_terms(ch);
    var xs: Regs1x256;
    var gs: Regs1x256;
    var st = vec2<f32>(0.0);
    for (var r = 0u; r < P().n; r += 1u) {
        xs.v[r] = x_at(r * P().c + ch);
        gs.v[r] = dy_at(r * P().c + ch);
        st += grad_term1(xs.v[r], gs.v[r], a);
    }
    let l = grad_line1(ch, a, st);
    for (var r = 0u; r < P().n; r += 1u) {
        grad_value1(ch, r, xs.v[r], gs.v[r], l);
    }
}
