// The four-channel column kernels of C % 4 == 0 where they sweep up to
// REG_ROWS_64 rows in registers (after columns4_regs.wgsl, whose helpers
// they use; the host's ColumnRegs::Rows64Lanes: CPU adapters, rows of at
// least 256 channels past COLUMN_SMALL values). Each thread takes
// REG_LANES_64 (4) consecutive lanes, so a SIMD group of a CPU adapter
// (eight invocations) reads 512 contiguous bytes of every row before the
// next row, not 128 (A/B on lavapipe, Zen 5, five alternations, x a copy:
// training forward `32x131072` 2.55 -> 2.30, `64x65536` 2.35 -> 2.01;
// backward `16x262144` 4.21 -> 3.58, `32x131072` 3.70 -> 3.24, `64x65536`
// 3.56 -> 2.98; training + residual + ReLU `64x65536` 3.18 -> 2.57). The
// host sizes the grid by threads (Strategy::threads). Not taken: the same
// for odd C (lanes4_odd.wgsl,
// whose lanes read two vec4s each: backward 6-16% slower, training alike;
// a thread reading the five aligned vec4s its lanes span once was 5-14%
// faster only while it wrote whole vec4s and, where two threads share a
// vec4, single components of it, which WGSL lets touch the whole vec4: a
// race; with single values written, 5-12% slower than one lane per
// thread), nor without a sweep (training forward `16x262144` 2.18 -> 2.29). Every
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

// The same for up to REG_ROWS_16 rows (the *_regs16_lanes entry points:
// WGSL zero-fills a function's arrays, 8 KiB a thread in the backward's
// two of 64 rows; lavapipe, Zen 5, three alternations, backward x a copy:
// `16x262144` 3.61 -> 3.13, `12x349524` 3.90 -> 3.45, `10x419428` 4.11 ->
// 3.55; training + residual + ReLU 3-9% faster).
struct LaneRegs16 {
    v: array<vec4<f32>, REG_ROWS_16 * REG_LANES_64>,
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

// Lane q's row r, folded into f (0 for a lane past C / 4). The callers
// store it into their arrays themselves: no function takes a pointer to
// an array, which GLSL would copy in and out at every call.
fn fold_reg_row(f: ptr<function, RowsFold>, q: u32, r: u32, live: bool) -> vec4<f32> {
    if (!live) {
        return vec4<f32>(0.0);
    }
    let v = row_x(q, r);
    // The fast fold: the shift serves only the careful pass, which
    // batch_terms4 runs from x with the lane's own shift.
    rows_fold_step(f, v, vec4<f32>(0.0), r, false);
    return v;
}

fn normalize_reg_row(q: u32, r: u32, x: vec4<f32>, t: NormTerms4, live: bool) {
    if (live) {
        normalize_row4(q, r, x, t);
    }
}

fn reg_shift(q0: u32, live: bool) -> vec4<f32> {
    if (live) {
        return lane_shift4(q0);
    }
    return vec4<f32>(0.0);
}

// What the kernels of both array sizes (REG_ROWS_64, REG_ROWS_16) do
// between their two loops, once: each live lane's terms from its shift
// and fold (forward), its grad_weight, grad_bias and grad_input line from
// its sums (backward). The lanes' values go in by value (the four
// gradient lanes as four arguments: bundled in one struct, the backward
// of `64x65536` measured 6% slower on lavapipe).
struct LaneShifts {
    s0: vec4<f32>,
    s1: vec4<f32>,
    s2: vec4<f32>,
    s3: vec4<f32>,
}

struct LaneFolds {
    f0: RowsFold,
    f1: RowsFold,
    f2: RowsFold,
    f3: RowsFold,
}

struct LaneTerms {
    t0: NormTerms4,
    t1: NormTerms4,
    t2: NormTerms4,
    t3: NormTerms4,
}

// batch_terms4 of each live lane (the running update with it).
fn lanes_terms(q0: u32, live: vec4<bool>, s: LaneShifts, f: LaneFolds) -> LaneTerms {
    var t: LaneTerms;
    if (live.x) {
        t.t0 = batch_terms4(q0, s.s0, f.f0);
    }
    if (live.y) {
        t.t1 = batch_terms4(q0 + 1u, s.s1, f.f1);
    }
    if (live.z) {
        t.t2 = batch_terms4(q0 + 2u, s.s2, f.f2);
    }
    if (live.w) {
        t.t3 = batch_terms4(q0 + 3u, s.s3, f.f3);
    }
    return t;
}

struct LaneLines {
    d0: DxLine4,
    d1: DxLine4,
    d2: DxLine4,
    d3: DxLine4,
}

// grad_line4 of each live lane (its grad_weight and grad_bias written).
fn lanes_lines(q0: u32, live: vec4<bool>, l0: GradLane4, l1: GradLane4, l2: GradLane4, l3: GradLane4) -> LaneLines {
    var d: LaneLines;
    if (live.x) {
        d.d0 = grad_line4(q0, l0);
    }
    if (live.y) {
        d.d1 = grad_line4(q0 + 1u, l1);
    }
    if (live.z) {
        d.d2 = grad_line4(q0 + 2u, l2);
    }
    if (live.w) {
        d.d3 = grad_line4(q0 + 3u, l3);
    }
    return d;
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
        let i = r * REG_LANES_64;
        xs.v[i] = fold_reg_row(&f0, q0, r, live.x);
        xs.v[i + 1u] = fold_reg_row(&f1, q0 + 1u, r, live.y);
        xs.v[i + 2u] = fold_reg_row(&f2, q0 + 2u, r, live.z);
        xs.v[i + 3u] = fold_reg_row(&f3, q0 + 3u, r, live.w);
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    let t = lanes_terms(q0, live, LaneShifts(s0, s1, s2, s3), LaneFolds(f0, f1, f2, f3));
    for (var r = 0u; r < n; r += 1u) {
        let i = r * REG_LANES_64;
        normalize_reg_row(q0, r, xs.v[i], t.t0, live.x);
        normalize_reg_row(q0 + 1u, r, xs.v[i + 1u], t.t1, live.y);
        normalize_reg_row(q0 + 2u, r, xs.v[i + 2u], t.t2, live.z);
        normalize_reg_row(q0 + 3u, r, xs.v[i + 3u], t.t3, live.w);
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(COLUMN_WG)
fn forward_columns4_regs64_lanes(ids: Ids) {
    forward_regs64_lanes(first_reg_lane(ids));
}

// Lane q's row r of x and dy, added into l's sums (0 for a lane past
// C / 4; the callers store them, as fold_reg_row's).
struct RegRow {
    x: vec4<f32>,
    dy: vec4<f32>,
}

fn grad_reg_row(l: ptr<function, GradLane4>, q: u32, r: u32, live: bool) -> RegRow {
    if (!live) {
        return RegRow(vec4<f32>(0.0), vec4<f32>(0.0));
    }
    let x = row_x(q, r);
    let g = row_dy(q, r);
    *l = grad_add4(*l, x, g);
    return RegRow(x, g);
}

fn dx_reg_row(q: u32, r: u32, x: vec4<f32>, g: vec4<f32>, l: GradLane4, line: DxLine4, live: bool) {
    if (live) {
        grad_row4(q, r, x, g, l, line);
    }
}

fn reg_grad_lane(q: u32, live: bool) -> GradLane4 {
    var l: GradLane4;
    if (live) {
        l = grad_lane4(q);
    }
    return l;
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
        let i = r * REG_LANES_64;
        let a0 = grad_reg_row(&l0, q0, r, live.x);
        let a1 = grad_reg_row(&l1, q0 + 1u, r, live.y);
        let a2 = grad_reg_row(&l2, q0 + 2u, r, live.z);
        let a3 = grad_reg_row(&l3, q0 + 3u, r, live.w);
        xs.v[i] = a0.x;
        gs.v[i] = a0.dy;
        xs.v[i + 1u] = a1.x;
        gs.v[i + 1u] = a1.dy;
        xs.v[i + 2u] = a2.x;
        gs.v[i + 2u] = a2.dy;
        xs.v[i + 3u] = a3.x;
        gs.v[i + 3u] = a3.dy;
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    let d = lanes_lines(q0, live, l0, l1, l2, l3);
    for (var r = 0u; r < n; r += 1u) {
        let i = r * REG_LANES_64;
        dx_reg_row(q0, r, xs.v[i], gs.v[i], l0, d.d0, live.x);
        dx_reg_row(q0 + 1u, r, xs.v[i + 1u], gs.v[i + 1u], l1, d.d1, live.y);
        dx_reg_row(q0 + 2u, r, xs.v[i + 2u], gs.v[i + 2u], l2, d.d2, live.z);
        dx_reg_row(q0 + 3u, r, xs.v[i + 3u], gs.v[i + 3u], l3, d.d3, live.w);
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(COLUMN_WG)
fn backward_columns4_regs64_lanes(ids: Ids) {
    backward_regs64_lanes(first_reg_lane(ids));
}

// forward_regs64_lanes with arrays of REG_ROWS_16 rows (WGSL has no
// generic array sizes, and no function here may take a pointer to an
// array): where the rows fit, a quarter of the bytes to zero-fill.
fn forward_regs16_lanes(q0: u32) {
    let n = P().n;
    if (n > REG_ROWS_16) {
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
    var xs: LaneRegs16;
    for (var r = 0u; r < n; r += 1u) {
        let i = r * REG_LANES_64;
        xs.v[i] = fold_reg_row(&f0, q0, r, live.x);
        xs.v[i + 1u] = fold_reg_row(&f1, q0 + 1u, r, live.y);
        xs.v[i + 2u] = fold_reg_row(&f2, q0 + 2u, r, live.z);
        xs.v[i + 3u] = fold_reg_row(&f3, q0 + 3u, r, live.w);
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    let t = lanes_terms(q0, live, LaneShifts(s0, s1, s2, s3), LaneFolds(f0, f1, f2, f3));
    for (var r = 0u; r < n; r += 1u) {
        let i = r * REG_LANES_64;
        normalize_reg_row(q0, r, xs.v[i], t.t0, live.x);
        normalize_reg_row(q0 + 1u, r, xs.v[i + 1u], t.t1, live.y);
        normalize_reg_row(q0 + 2u, r, xs.v[i + 2u], t.t2, live.z);
        normalize_reg_row(q0 + 3u, r, xs.v[i + 3u], t.t3, live.w);
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(COLUMN_WG)
fn forward_columns4_regs16_lanes(ids: Ids) {
    forward_regs16_lanes(first_reg_lane(ids));
}

// backward_regs64_lanes with arrays of REG_ROWS_16 rows (as
// forward_regs16_lanes).
fn backward_regs16_lanes(q0: u32) {
    let n = P().n;
    if (n > REG_ROWS_16) {
        return;
    }
    let live = reg_lanes_live(q0);
    var l0 = reg_grad_lane(q0, live.x);
    var l1 = reg_grad_lane(q0 + 1u, live.y);
    var l2 = reg_grad_lane(q0 + 2u, live.z);
    var l3 = reg_grad_lane(q0 + 3u, live.w);
    var xs: LaneRegs16;
    var gs: LaneRegs16;
    for (var r = 0u; r < n; r += 1u) {
        let i = r * REG_LANES_64;
        let a0 = grad_reg_row(&l0, q0, r, live.x);
        let a1 = grad_reg_row(&l1, q0 + 1u, r, live.y);
        let a2 = grad_reg_row(&l2, q0 + 2u, r, live.z);
        let a3 = grad_reg_row(&l3, q0 + 3u, r, live.w);
        xs.v[i] = a0.x;
        gs.v[i] = a0.dy;
        xs.v[i + 1u] = a1.x;
        gs.v[i + 1u] = a1.dy;
        xs.v[i + 2u] = a2.x;
        gs.v[i + 2u] = a2.dy;
        xs.v[i + 3u] = a3.x;
        gs.v[i + 3u] = a3.dy;
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
    let d = lanes_lines(q0, live, l0, l1, l2, l3);
    for (var r = 0u; r < n; r += 1u) {
        let i = r * REG_LANES_64;
        dx_reg_row(q0, r, xs.v[i], gs.v[i], l0, d.d0, live.x);
        dx_reg_row(q0 + 1u, r, xs.v[i + 1u], gs.v[i + 1u], l1, d.d1, live.y);
        dx_reg_row(q0 + 2u, r, xs.v[i + 2u], gs.v[i + 2u], l2, d.d2, live.z);
        dx_reg_row(q0 + 3u, r, xs.v[i + 3u], gs.v[i + 3u], l3, d.d3, live.w);
        if (sweep_turn(r)) {
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(COLUMN_WG)
fn backward_columns4_regs16_lanes(ids: Ids) {
    backward_regs16_lanes(first_reg_lane(ids));
}
