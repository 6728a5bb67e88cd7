// The four-channel column kernels with a lane's rows in registers (after
// columns4.wgsl, whose helpers they use): the training forward and the
// backward read x (and dy) once, for up to 64 (*_regs64) or 256
// (*_regs256) rows. The host takes them on CPU adapters (ColumnRegs),
// where a second read of rows a whole row apart costs far more than the
// stack the arrays take. WGSL zero-fills a function's arrays, so each
// size has its own entry points. The *_sweep entry points (the host's
// ColumnRegs for rows of at least 256 channels; up to 64 rows of C % 4 ==
// 0 take columns4_lanes.wgsl's *_regs64_lanes (*_regs16_lanes up to 16
// rows) instead, so there
// *_regs64_sweep serves odd C) sweep every loop over the
// rows (SWEEP_ROWS, common.wgsl: a barrier every SWEEP_ROWS rows, the
// workgroup's SIMD groups taking turns over them), the lanes past C/4
// going through the loops idle so that every barrier is in uniform control
// flow (A/B on lavapipe, Zen 5: `64x65536` training forward 21.5 ->
// 10.9 ms, backward 32.3 -> 14.7 ms); the others have no barrier, and
// their idle lanes return at once (idle lanes looping doubled the fixed
// cost of `32x20`; one kernel with a barrier in a branch left untaken
// after idle lanes had returned gave wrong results on lavapipe). Each
// pair shares one function, whose `sweep` argument is a constant in each
// entry point, so the compiler drops the other form's barriers.

// A lane's rows in registers, in the two sizes of the *_regs64 and
// *_regs256 entry points (the host picks the smallest that holds P.n).
struct Regs64 {
    v: array<vec4<f32>, REG_ROWS_64>,
}

struct Regs256 {
    v: array<vec4<f32>, REG_ROWS_256>,
}

// The shift of lane q: its first row where finite (as shift_of).
fn lane_shift4(q: u32) -> vec4<f32> {
    let first = row_x(q, 0u);
    return select(vec4<f32>(0.0), first, finite4(first));
}

// Lane q's normalize terms from batch statistics, with the running update:
// the fast fold `f` of its rows, or, where that is not usable, the careful
// pass over x (rows_fold, moments.wgsl).
fn batch_terms4(q: u32, shift: vec4<f32>, f: RowsFold) -> NormTerms4 {
    var st = RowsState(f32(P().n), f.mean, f.m2, f.tag);
    if (!fast_state_ok(st.mean, st.m2)) {
        st = lane_fold(q, shift, true);
    }
    let s = channel_stats4(st, shift, f32(P().count), P().eps);
    update_running4(q, s.shift, s.mean, s.unbiased);
    return set_terms4(q, s.shift, s.mean, s.invstd);
}

fn normalize_row4(q: u32, r: u32, x: vec4<f32>, t: NormTerms4) {
    row_store_normalized(q, r, shifted_affine4(x, t.shift, t.scale, t.offset));
}

// A backward lane's saved terms and its gradient sums.
struct GradLane4 {
    shift: vec4<f32>,
    mean: vec4<f32>,
    invstd: vec4<f32>,
    scale: vec4<f32>,
    sdy: vec4<f32>,
    sdyx: vec4<f32>,
}

fn grad_lane4(q: u32) -> GradLane4 {
    let z = vec4<f32>(0.0);
    return GradLane4(
        term_of(TERM_SHIFT, q),
        term_of(TERM_MEAN, q),
        term_of(TERM_INVSTD, q),
        term_of(TERM_SCALE, q),
        z,
        z,
    );
}

fn grad_add4(l: GradLane4, x: vec4<f32>, g: vec4<f32>) -> GradLane4 {
    var m = l;
    m.sdy += g;
    m.sdyx += g * x_hat4(x, l.shift, l.mean, l.invstd);
    return m;
}

// Writes grad_weight and grad_bias; returns the grad_input line (dx_line4
// in common.wgsl, as grad_input_line in finalize.wgsl), raising the
// rescue flag for sums that are not finite, or redoing them (lane_totals4).
fn grad_line4(q: u32, l: GradLane4) -> DxLine4 {
    let t = lane_totals4(q, l.sdy, l.sdyx, l.shift, l.mean, l.invstd);
    set_grads(q, t.sdy, t.sdyx);
    return dx_line4(l.shift, l.mean, l.invstd, t.mdy, t.mdyx);
}

fn grad_row4(q: u32, r: u32, x: vec4<f32>, g: vec4<f32>, l: GradLane4, line: DxLine4) {
    row_store(q, r, grad_input4(x, g, line.shift, l.scale, line.slope, line.intercept));
}

// Training forward with up to REG_ROWS_64 rows in registers: x read once.
fn forward_regs64(q: u32, sweep: bool) {
    let live = q < lane_count();
    if (P().n > REG_ROWS_64 || (!live && !sweep)) {
        return;
    }
    var shift = vec4<f32>(0.0);
    if (live) {
        shift = lane_shift4(q);
    }
    var xs: Regs64;
    var f = rows_fold_start(shift);
    for (var r = 0u; r < P().n; r += 1u) {
        if (live) {
            xs.v[r] = row_x(q, r);
            rows_fold_step(&f, xs.v[r], shift, r, false);
        }
        if (sweep && sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    var t: NormTerms4;
    if (live) {
        t = batch_terms4(q, shift, f);
    }
    for (var r = 0u; r < P().n; r += 1u) {
        if (live) {
            normalize_row4(q, r, xs.v[r], t);
        }
        if (sweep && sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(COLUMN_WG)
fn forward_columns4_regs64(ids: Ids) {
    forward_regs64(column_lane(ids), false);
}

@compute @workgroup_size(COLUMN_WG)
fn forward_columns4_regs64_sweep(ids: Ids) {
    forward_regs64(column_lane(ids), true);
}

// Training forward with up to REG_ROWS_256 rows in registers: x read once.
fn forward_regs256(q: u32, sweep: bool) {
    let live = q < lane_count();
    if (P().n > REG_ROWS_256 || (!live && !sweep)) {
        return;
    }
    var shift = vec4<f32>(0.0);
    if (live) {
        shift = lane_shift4(q);
    }
    var xs: Regs256;
    var f = rows_fold_start(shift);
    for (var r = 0u; r < P().n; r += 1u) {
        if (live) {
            xs.v[r] = row_x(q, r);
            rows_fold_step(&f, xs.v[r], shift, r, false);
        }
        if (sweep && sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    var t: NormTerms4;
    if (live) {
        t = batch_terms4(q, shift, f);
    }
    for (var r = 0u; r < P().n; r += 1u) {
        if (live) {
            normalize_row4(q, r, xs.v[r], t);
        }
        if (sweep && sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(COLUMN_WG)
fn forward_columns4_regs256(ids: Ids) {
    forward_regs256(column_lane(ids), false);
}

@compute @workgroup_size(COLUMN_WG)
fn forward_columns4_regs256_sweep(ids: Ids) {
    forward_regs256(column_lane(ids), true);
}

// Backward with up to REG_ROWS_64 rows of x and dy in registers: each
// read once.
fn backward_regs64(q: u32, sweep: bool) {
    let live = q < lane_count();
    if (P().n > REG_ROWS_64 || (!live && !sweep)) {
        return;
    }
    var l: GradLane4;
    if (live) {
        l = grad_lane4(q);
    }
    var xs: Regs64;
    var gs: Regs64;
    for (var r = 0u; r < P().n; r += 1u) {
        if (live) {
            xs.v[r] = row_x(q, r);
            gs.v[r] = row_dy(q, r);
            l = grad_add4(l, xs.v[r], gs.v[r]);
        }
        if (sweep && sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    var line: DxLine4;
    if (live) {
        line = grad_line4(q, l);
    }
    for (var r = 0u; r < P().n; r += 1u) {
        if (live) {
            grad_row4(q, r, xs.v[r], gs.v[r], l, line);
        }
        if (sweep && sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(COLUMN_WG)
fn backward_columns4_regs64(ids: Ids) {
    backward_regs64(column_lane(ids), false);
}

@compute @workgroup_size(COLUMN_WG)
fn backward_columns4_regs64_sweep(ids: Ids) {
    backward_regs64(column_lane(ids), true);
}

// Backward with up to REG_ROWS_256 rows of x and dy in registers: each
// read once.
fn backward_regs256(q: u32, sweep: bool) {
    let live = q < lane_count();
    if (P().n > REG_ROWS_256 || (!live && !sweep)) {
        return;
    }
    var l: GradLane4;
    if (live) {
        l = grad_lane4(q);
    }
    var xs: Regs256;
    var gs: Regs256;
    for (var r = 0u; r < P().n; r += 1u) {
        if (live) {
            xs.v[r] = row_x(q, r);
            gs.v[r] = row_dy(q, r);
            l = grad_add4(l, xs.v[r], gs.v[r]);
        }
        if (sweep && sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    var line: DxLine4;
    if (live) {
        line = grad_line4(q, l);
    }
    for (var r = 0u; r < P().n; r += 1u) {
        if (live) {
            grad_row4(q, r, xs.v[r], gs.v[r], l, line);
        }
        if (sweep && sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(COLUMN_WG)
fn backward_columns4_regs256(ids: Ids) {
    backward_regs256(column_lane(ids), false);
}

@compute @workgroup_size(COLUMN_WG)
fn backward_columns4_regs256_sweep(ids: Ids) {
    backward_regs256(column_lane(ids), true);
}
