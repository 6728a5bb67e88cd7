// Column kernels for (N, C) inputs with few rows next to their channels
// (wide layers, small batches): one thread owns four consecutive channels
// (lane q: channels 4q .. 4q + 3) over all N rows, so the whole op is one
// dispatch (a backward past 2^16 values: then backward_columns_rescue,
// below) with no partial states and no workgroup merge, and the rows a
// thread reads twice are still in its cache. Lanes reach their values
// through the accessors of lanes4.wgsl (C % 4 == 0: whole aligned vec4s,
// per-channel values included, since state, terms and gradients are
// C-value sections) or lanes4_odd.wgsl (other C: single values, the last
// lane's missing channels never written); one module per accessor file.
//
// forward_columns4:  batch statistics (or, in eval, the running
//   statistics), the saved terms and the running update exactly as
//   moments_finalize / eval_prepare (finalize.wgsl), then
//   y = act((x - shift) * scale + offset + residual).
// backward_columns4: (sum dy, sum dy * x_hat) -> grad_weight, grad_bias
//   (as grads_finalize), then dx = scale * (dy + slope * (x - shift) +
//   intercept). Sums that came out non-finite raise the rescue flag
//   (rescue_flag.wgsl): backward_columns_rescue (columns.wgsl) redoes
//   those channels after the kernel, grad_weight, grad_bias and dx; or,
//   for small tensors (INLINE_RESCUE), the kernel itself.
// There is one chunk (lead = 0).
// Up to REG_ROWS rows, both kernels read x (and dy) once and keep the
// lane's values in registers; the *_regs64 and *_regs256 entry points do
// so for up to 64 and 256 rows (training forward and backward on CPU
// adapters, where a second read of rows a whole row apart costs far more
// than the stack the arrays take). WGSL zero-fills a function's arrays, so
// each size has its own entry points (one kernel with two sizes made
// (2, 2097152) backward 2x slower on lavapipe, arrays of 256 rows made
// (16, 262144) backward 16% slower than arrays of 64).

// channel_stats and stats_base (moments.wgsl) for four channels sharing a
// count.
// With stats_base's (shift, mean - shift) pair.
struct Stats4 {
    shift: vec4<f32>,
    mean: vec4<f32>,
    invstd: vec4<f32>,
    unbiased: vec4<f32>,
}

fn channel_stats4(st: RowsState, shift: vec4<f32>, n: f32, eps: f32) -> Stats4 {
    let poisoned = !finite4(st.tag);
    let nan = vec4<f32>(bitcast<f32>(0x7fc00000u));
    let u = units4(st.tag);
    let var_u = st.m2 / n;
    let invstd = select(u / sqrt(var_u + eps * u * u), vec4<f32>(1.0 / sqrt(eps)), var_u == vec4<f32>(0.0));
    let inv_u = inv_units4(st.tag);
    let mean = st.mean * inv_u;
    let rebase = !poisoned & !finite4(mean);
    return Stats4(
        select(shift, vec4<f32>(0.0), rebase),
        select(select(mean, st.tag, poisoned), (shift * u + st.mean) * inv_u, rebase),
        select(unflushed4(invstd), nan, poisoned),
        select(unbiased4(st.m2, n, st.tag), nan, poisoned),
    );
}

// update_running (finalize.wgsl) for lane q.
fn update_running4(q: u32, base: vec4<f32>, rel: vec4<f32>, unbiased: vec4<f32>) {
    if ((P().flags & FLAG_UPDATE_RUNNING) != 0u) {
        let m = P().momentum;
        let old_mean = state_of(2u, q);
        let old_var = state_of(3u, q);
        set_state(2u, q, running_blend(m, old_mean, (base - old_mean) + rel, base + rel));
        set_state(3u, q, running_blend(m, old_var, unbiased - old_var, unbiased));
    }
}

struct NormTerms4 {
    shift: vec4<f32>,
    scale: vec4<f32>,
    offset: vec4<f32>,
}

// set_terms (finalize.wgsl) for lane q, but for TERM_OFFSET.
fn set_terms4(q: u32, shift: vec4<f32>, mean: vec4<f32>, invstd: vec4<f32>) -> NormTerms4 {
    var w = vec4<f32>(1.0);
    var b = vec4<f32>(0.0);
    if ((P().flags & FLAG_AFFINE) != 0u) {
        w = state_of(0u, q);
        b = state_of(1u, q);
    }
    let scale = w * invstd;
    let offset = select(b - mean * scale, b, mean == vec4<f32>(0.0));
    set_term(TERM_SHIFT, q, shift);
    set_term(TERM_MEAN, q, mean);
    set_term(TERM_INVSTD, q, invstd);
    set_term(TERM_SCALE, q, scale);
    // No TERM_OFFSET: only the normalize kernels read it, right after the
    // finalize step that writes it; a column kernel normalises itself.
    return NormTerms4(shift, scale, offset);
}

// Whether the backward kernels redo gradient sums that overflowed
// themselves (grad_totals1, grad_totals4: inputs of at most 2^16 values,
// kept one dispatch, where a second dispatch would cost more than the
// slow path's code) or raise the rescue flag for backward_columns_rescue.
// (The same in columns.wgsl; never in one module. Only the column
// families carry it: a module without overrides, finalize's, compiles
// once up front on Vulkan.)
override INLINE_RESCUE: bool = false;

// Pipeline constant: invocations per workgroup of the column kernels' entry
// points, the plan's threads per workgroup (Strategy::column_lanes: 32 to
// WG), so that only the last workgroup (and a tiny input's one) may run
// invocations past the lanes. Idle invocations are not free on CPU
// adapters: each SIMD group of them runs the sweeps' loops for their
// barriers and zero-fills its register arrays (4 to 8 KiB per invocation
// in the *_regs64_lanes kernels), which made the backward of `64x2048`
// 19x a copy on lavapipe in workgroups of WG with 32 lanes (2.6x in
// workgroups of 32). (The same in columns.wgsl.)
override COLUMN_WG: u32 = 256u;

// Lane q's totals from its f32 sums: with INLINE_RESCUE, sums that are
// not finite redone here (grad_totals4); else they raise the rescue flag
// (the lane's grad_weight and grad_bias, written as they are, tell
// backward_columns_rescue which channels to redo; the missing channels of
// a last odd lane repeat its first, live one).
fn lane_totals4(q: u32, sdy: vec4<f32>, sdyx: vec4<f32>, shift: vec4<f32>, mean: vec4<f32>, invstd: vec4<f32>) -> GradTotals4 {
    if (INLINE_RESCUE) {
        return grad_totals4(q, sdy, sdyx, shift, mean, invstd);
    }
    if (!all(finite4(sdy) & finite4(sdyx))) {
        raise_rescue_flag();
    }
    return plain_totals4(sdy, sdyx);
}

// Rows up to which the column kernels keep a lane's values in registers
// and read x (and dy) once: on CPU adapters every storage access costs far
// more than the arithmetic. (Loops of a fixed bound REG_ROWS, which a GPU
// compiler would unroll, ran 30-70x slower on lavapipe.)
const REG_ROWS: u32 = 8u;

// A lane's rows held in registers (the first P.n of them).
struct Regs {
    v: array<vec4<f32>, REG_ROWS>,
}

// Lane q's normalize terms: batch statistics (with the running update) or
// the running statistics; with `regs`, the lane's values are `xs`.
fn lane_terms4(q: u32, regs: bool, xs: ptr<function, Regs>) -> NormTerms4 {
    if ((P().flags & FLAG_BATCH_STATS) != 0u) {
        // The shift: the lane's first row where finite (as shift_of).
        var first = (*xs).v[0];
        if (!regs) {
            first = row_x(q, 0u);
        }
        let shift = select(vec4<f32>(0.0), first, finite4(first));
        var st: RowsState;
        if (regs) {
            st = regs_moments(xs, shift);
        } else {
            st = lane_moments(q, shift);
        }
        let s = channel_stats4(st, shift, f32(P().count), P().eps);
        update_running4(q, s.shift, s.mean, s.unbiased);
        return set_terms4(q, s.shift, s.mean, s.invstd);
    }
    let invstd = 1.0 / sqrt(state_of(3u, q) + vec4<f32>(P().eps));
    return set_terms4(q, state_of(2u, q), vec4<f32>(0.0), invstd);
}

// rows_moments (moments.wgsl) over the P.n values in registers.
fn regs_moments(xs: ptr<function, Regs>, shift: vec4<f32>) -> RowsState {
    let fast = regs_fold(xs, shift, false);
    if (fast_state_ok(fast.mean, fast.m2)) {
        return fast;
    }
    return regs_fold(xs, shift, true);
}

fn regs_fold(xs: ptr<function, Regs>, shift: vec4<f32>, careful: bool) -> RowsState {
    var f = rows_fold_start(shift);
    for (var k = 0u; k < P().n; k += 1u) {
        rows_fold_step(&f, (*xs).v[k], shift, k, careful);
    }
    return RowsState(f32(P().n), f.mean, f.m2, f.tag);
}

// rows_moments (moments4.wgsl) over lane q's rows, through the accessors.
fn lane_moments(q: u32, shift: vec4<f32>) -> RowsState {
    let fast = lane_fold(q, shift, false);
    if (fast_state_ok(fast.mean, fast.m2)) {
        return fast;
    }
    return lane_fold(q, shift, true);
}

fn lane_fold(q: u32, shift: vec4<f32>, careful: bool) -> RowsState {
    var f = rows_fold_start(shift);
    for (var r = 0u; r < P().n; r += 1u) {
        rows_fold_step(&f, row_x(q, r), shift, r, careful);
    }
    return RowsState(f32(P().n), f.mean, f.m2, f.tag);
}

@compute @workgroup_size(COLUMN_WG)
fn forward_columns4(ids: Ids) {
    let q = column_lane(ids);
    if (q >= lane_count()) {
        return;
    }
    var xs: Regs;
    let regs = P().n <= REG_ROWS;
    if (regs) {
        for (var r = 0u; r < P().n; r += 1u) {
            xs.v[r] = row_x(q, r);
        }
    }
    let t = lane_terms4(q, regs, &xs);
    for (var r = 0u; r < P().n; r += 1u) {
        var x = vec4<f32>(0.0);
        if (regs) {
            x = xs.v[r];
        } else {
            x = row_x(q, r);
        }
        row_store_normalized(q, r, shifted_affine4(x, t.shift, t.scale, t.offset));
    }
}

@compute @workgroup_size(COLUMN_WG)
fn backward_columns4(ids: Ids) {
    let q = column_lane(ids);
    if (q >= lane_count()) {
        return;
    }
    let shift = term_of(TERM_SHIFT, q);
    let mean = term_of(TERM_MEAN, q);
    let invstd = term_of(TERM_INVSTD, q);
    let scale = term_of(TERM_SCALE, q);
    var sdy = vec4<f32>(0.0);
    var sdyx = vec4<f32>(0.0);
    // Up to REG_ROWS rows: x and dy read once, kept in registers.
    var xs: Regs;
    var gs: Regs;
    let regs = P().n <= REG_ROWS;
    for (var r = 0u; r < P().n; r += 1u) {
        let g = row_dy(q, r);
        let x = row_x(q, r);
        if (regs) {
            xs.v[r] = x;
            gs.v[r] = g;
        }
        sdy += g;
        sdyx += g * x_hat4(x, shift, mean, invstd);
    }
    let t = lane_totals4(q, sdy, sdyx, shift, mean, invstd);
    set_grads(q, t.sdy, t.sdyx);
    let line = dx_line4(shift, mean, invstd, t.mdy, t.mdyx);
    for (var r = 0u; r < P().n; r += 1u) {
        var x = vec4<f32>(0.0);
        var g = vec4<f32>(0.0);
        if (regs) {
            x = xs.v[r];
            g = gs.v[r];
        } else {
            x = row_x(q, r);
            g = row_dy(q, r);
        }
        row_store(q, r, grad_input4(x, g, line.shift, scale, line.slope, line.intercept));
    }
}
