// The four-channel column kernels where they sweep up to REG_ROWS_64 rows
// in registers (after columns4_regs.wgsl, whose helpers they use; the
// host's ColumnRegs::Rows64Lanes: CPU adapters, rows of at least 256
// channels past COLUMN_SMALL values; odd C from 17 rows, where every pass
// takes four-channel lanes), through the row accessors of lanes4.wgsl
// (C % 4 == 0) or lanes4_odd.wgsl (other C). Each thread takes
// REG_LANES_64 (4) consecutive lanes, so a SIMD group of a CPU adapter
// (eight invocations) reads 512 contiguous bytes of every row before the
// next row, not 128 (A/B on lavapipe, Zen 5, five alternations, x a copy:
// training forward `32x131072` 2.55 -> 2.30, `64x65536` 2.35 -> 2.01;
// backward `16x262144` 4.21 -> 3.58, `32x131072` 3.70 -> 3.24, `64x65536`
// 3.56 -> 2.98; training + residual + ReLU `64x65536` 3.18 -> 2.57). The
// host sizes the grid by threads (Strategy::threads). For odd C a thread
// reads the five aligned vec4s its lanes' values span once and writes the
// aligned vec4s they cover (lanes4_odd.wgsl; four lanes that each read
// their two vec4s were 6-16% slower in the backward than one lane per
// thread): against one lane per thread, four alternations, x a copy,
// training `64x65535` 2.91 -> 2.69, `32x131071` 3.07 -> 2.96; backward
// `64x65535` 4.08 -> 3.80; training + residual + ReLU `64x65535` 3.95 ->
// 3.58, `32x131071` 4.31 -> 3.83. Not taken: four lanes without a sweep
// (training forward `16x262144` 2.18 -> 2.29). Every
// loop sweeps (SWEEP_ROWS), idle lanes included, so every barrier is in
// uniform control flow. The rows of all four lanes are one array with a
// row's four vec4s side by side, and no function takes a pointer to it:
// GLSL copies such an argument in and out at every call (the GL tests of
// odd C ran 17 times as long that way).

// REG_LANES_64 lanes' rows in registers: lane q0 + m's row r at
// r * REG_LANES_64 + m, so each row's four vec4s lie side by side.
struct LaneRegs64 {
    v: array<vec4<f32>, REG_ROWS_64 * REG_LANES_64>,
}

// The first of the thread's REG_LANES_64 consecutive lanes (past every lane
// for the invocations column_lane leaves without one).
fn first_reg_lane(ids: Ids) -> u32 {
    let q = column_lane(ids);
    return select(q * REG_LANES_64, 0xffffffffu, q == 0xffffffffu);
}

// Which of the thread's lanes q0 + m exist (component m; q0 < count keeps
// q0 + m from wrapping). The kernels below return early (a uniform test)
// rather than run their bodies inside a branch of the entry point: that
// branch made the backward of `16x262144` and `32x131072` 50-70% slower on
// lavapipe.
fn reg_lanes_live(q0: u32) -> vec4<bool> {
    let count = lane_count();
    return vec4<bool>(q0 < count) & (vec4<u32>(q0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(count));
}

// Lane values v of row r folded into f where the lane exists. The callers
// store the rows into their arrays themselves: no function takes a
// pointer to an array, which GLSL would copy in and out at every call.
// Each row's lanes are read (lane_x, lane_dy) and written (lane_out) one
// after another through the accessors of lanes4.wgsl (whole vec4s) or
// lanes4_odd.wgsl (other C), which carry a vec4 from lane to lane: one
// lane's values at a time, as few vec4s at once as a CPU's registers
// hold (all four lanes' rows read first made the backward 8% slower).
fn fold_lane(f: ptr<function, RowsFold>, v: vec4<f32>, r: u32, live: bool) {
    if (live) {
        // The fast fold: the shift serves only the careful pass, which
        // batch_terms4 runs from x with the lane's own shift.
        rows_fold_step(f, v, vec4<f32>(0.0), r, false);
    }
}

fn reg_shift(q0: u32, live: bool) -> vec4<f32> {
    if (live) {
        return lane_shift4(q0);
    }
    return vec4<f32>(0.0);
}

fn lane_y(x: vec4<f32>, t: NormTerms4) -> vec4<f32> {
    return shifted_affine4(x, t.shift, t.scale, t.offset);
}

// Training forward with up to REG_ROWS_64 rows of REG_LANES_64 (4)
// consecutive lanes in registers: x read once, each row's four vec4s one
// after another (one variable per lane: arrays of states would live in
// memory).
fn forward_regs64_lanes(q0: u32) {
    let n = P().n;
    if (n > REG_ROWS_64) {
        return;
    }
    let live = reg_lanes_live(q0);
    let s0 = reg_shift(q0, live.x);
    let s1 = reg_shift(q0 + 1u, live.y);
    let s2 = reg_shift(q0 + 2u, live.z);
    let s3 = reg_shift(q0 + 3u, live.w);
    var f0 = rows_fold_start(s0);
    var f1 = rows_fold_start(s1);
    var f2 = rows_fold_start(s2);
    var f3 = rows_fold_start(s3);
    var xs: LaneRegs64;
    for (var r = 0u; r < n; r += 1u) {
        let at = lanes_at(q0, r);
        let i = r * REG_LANES_64;
        let v = lanes_in_x(at, live);
        let x0 = lane_in_x(at, 0u, v, live);
        fold_lane(&f0, x0, r, live.x);
        xs.v[i] = x0;
        let x1 = lane_in_x(at, 1u, v, live);
        fold_lane(&f1, x1, r, live.y);
        xs.v[i + 1u] = x1;
        let x2 = lane_in_x(at, 2u, v, live);
        fold_lane(&f2, x2, r, live.z);
        xs.v[i + 2u] = x2;
        let x3 = lane_in_x(at, 3u, v, live);
        fold_lane(&f3, x3, r, live.w);
        xs.v[i + 3u] = x3;
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    var t0: NormTerms4;
    var t1: NormTerms4;
    var t2: NormTerms4;
    var t3: NormTerms4;
    if (live.x) {
        t0 = batch_terms4(q0, s0, f0);
    }
    if (live.y) {
        t1 = batch_terms4(q0 + 1u, s1, f1);
    }
    if (live.z) {
        t2 = batch_terms4(q0 + 2u, s2, f2);
    }
    if (live.w) {
        t3 = batch_terms4(q0 + 3u, s3, f3);
    }
    for (var r = 0u; r < n; r += 1u) {
        let at = lanes_at(q0, r);
        let i = r * REG_LANES_64;
        var o: LanesOut;
        lane_out_normalized(at, 0u, lane_y(xs.v[i], t0), &o, live);
        lane_out_normalized(at, 1u, lane_y(xs.v[i + 1u], t1), &o, live);
        lane_out_normalized(at, 2u, lane_y(xs.v[i + 2u], t2), &o, live);
        lane_out_normalized(at, 3u, lane_y(xs.v[i + 3u], t3), &o, live);
        lanes_out_end_normalized(at, &o, live);
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(WG)
fn forward_columns4_regs64_lanes(ids: Ids) {
    forward_regs64_lanes(first_reg_lane(ids));
}

fn grad_lane(l: ptr<function, GradLane4>, x: vec4<f32>, g: vec4<f32>, live: bool) {
    if (live) {
        *l = grad_add4(*l, x, g);
    }
}

fn reg_grad_lane(q: u32, live: bool) -> GradLane4 {
    var l: GradLane4;
    if (live) {
        l = grad_lane4(q);
    }
    return l;
}

fn lane_dx(x: vec4<f32>, g: vec4<f32>, l: GradLane4, line: DxLine4) -> vec4<f32> {
    return grad_input4(x, g, line.shift, l.scale, line.slope, line.intercept);
}

// Backward with up to REG_ROWS_64 rows of x and dy of REG_LANES_64 (4)
// consecutive lanes in registers: each read once (one variable per lane,
// as forward_regs64).
fn backward_regs64_lanes(q0: u32) {
    let n = P().n;
    if (n > REG_ROWS_64) {
        return;
    }
    let live = reg_lanes_live(q0);
    var l0 = reg_grad_lane(q0, live.x);
    var l1 = reg_grad_lane(q0 + 1u, live.y);
    var l2 = reg_grad_lane(q0 + 2u, live.z);
    var l3 = reg_grad_lane(q0 + 3u, live.w);
    var xs: LaneRegs64;
    var gs: LaneRegs64;
    for (var r = 0u; r < n; r += 1u) {
        let at = lanes_at(q0, r);
        let i = r * REG_LANES_64;
        let vx = lanes_in_x(at, live);
        let vg = lanes_in_dy(at, live);
        let x0 = lane_in_x(at, 0u, vx, live);
        let g0 = lane_in_dy(at, 0u, vg, live);
        grad_lane(&l0, x0, g0, live.x);
        xs.v[i] = x0;
        gs.v[i] = g0;
        let x1 = lane_in_x(at, 1u, vx, live);
        let g1 = lane_in_dy(at, 1u, vg, live);
        grad_lane(&l1, x1, g1, live.y);
        xs.v[i + 1u] = x1;
        gs.v[i + 1u] = g1;
        let x2 = lane_in_x(at, 2u, vx, live);
        let g2 = lane_in_dy(at, 2u, vg, live);
        grad_lane(&l2, x2, g2, live.z);
        xs.v[i + 2u] = x2;
        gs.v[i + 2u] = g2;
        let x3 = lane_in_x(at, 3u, vx, live);
        let g3 = lane_in_dy(at, 3u, vg, live);
        grad_lane(&l3, x3, g3, live.w);
        xs.v[i + 3u] = x3;
        gs.v[i + 3u] = g3;
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    var d0: DxLine4;
    var d1: DxLine4;
    var d2: DxLine4;
    var d3: DxLine4;
    if (live.x) {
        d0 = grad_line4(q0, l0);
    }
    if (live.y) {
        d1 = grad_line4(q0 + 1u, l1);
    }
    if (live.z) {
        d2 = grad_line4(q0 + 2u, l2);
    }
    if (live.w) {
        d3 = grad_line4(q0 + 3u, l3);
    }
    for (var r = 0u; r < n; r += 1u) {
        let at = lanes_at(q0, r);
        let i = r * REG_LANES_64;
        var o: LanesOut;
        lane_out(at, 0u, lane_dx(xs.v[i], gs.v[i], l0, d0), &o, live);
        lane_out(at, 1u, lane_dx(xs.v[i + 1u], gs.v[i + 1u], l1, d1), &o, live);
        lane_out(at, 2u, lane_dx(xs.v[i + 2u], gs.v[i + 2u], l2, d2), &o, live);
        lane_out(at, 3u, lane_dx(xs.v[i + 3u], gs.v[i + 3u], l3, d3), &o, live);
        lanes_out_end(at, &o, live);
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(WG)
fn backward_columns4_regs64_lanes(ids: Ids) {
    backward_regs64_lanes(first_reg_lane(ids));
}
