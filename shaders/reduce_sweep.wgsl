// Sweeps of the rows reductions (after reduce_rows.wgsl, whose entry
// points moments_partial_rows_sweep and grads_partial_rows_sweep call
// sweep_state and sweep_grads).
//
// The *_sweep entry points (ReducePlan::sweep on the host: CPU adapters,
// per-thread partials, rows of at least 256 channels) sweep (SWEEP_ROWS,
// common.wgsl): each thread folds its contiguous run of rows as the plain
// ones do, in a loop of the same length in every thread (thread_run_len,
// reduce.wgsl; rows outside the thread's own are skipped) with a barrier every
// SWEEP_ROWS rows. Each pair of entry points shares one function whose
// `sweep` argument is a constant, so the plain ones have no barrier.
//
// The loop length, the row stride and the first offset are read before the
// loops, and the offset steps by the stride: llvmpipe runs no loop-invariant
// code motion, so thread_run_len()'s division (one per SIMD lane) and the
// parameters behind rows_offset were evaluated at every row (A/B on
// lavapipe, Zen 5, six alternations, x a copy: training forward
// `4096x1024` 2.71 -> 2.45, `1024x4096` 2.80 -> 2.53, `16384x256` 2.67 ->
// 2.47; backward `4096x1024` 3.55 -> 3.29). The offsets are those of
// rows_offset: u32 arithmetic wraps.

// The rows [x, y) share s folds in a sweep: row_range, empty for a lane
// past the channels.
fn sweep_rows(s: Share) -> vec2<u32> {
    return select(vec2<u32>(0u), row_range(s), live4(s));
}

// rows_state for a sweep: the fast pass with its barriers (the same rows
// in the same order, so the same state), then, where it is not usable, the
// careful pass without (rows_fold).
fn sweep_state(s: Share) -> RowsState {
    let shift = shift4(s.ch);
    let rows = sweep_rows(s);
    var f = rows_fold_start(shift);
    var k = 0u;
    let len = thread_run_len();
    let stride = virtual_c();
    var o = rows_offset(s.start, s.ch);
    for (var j = 0u; j < len; j += 1u) {
        let r = s.start + j;
        if (r >= rows.x && r < rows.y) {
            rows_fold_step(&f, load4(o), shift, k, false);
            k += 1u;
        }
        o += stride;
        if (sweep_turn(j)) {
            workgroupBarrier();
        }
    }
    if (fast_state_ok(f.mean, f.m2)) {
        return RowsState(f32(k), f.mean, f.m2, f.tag);
    }
    return rows_fold(rows_offset(rows.x, s.ch), virtual_c(), k, shift, true);
}

// lane_grads for a sweep (see sweep_state): the same sums in the same
// order.
fn sweep_grads(s: Share, t: XhatTerms) -> GradSums {
    let rows = sweep_rows(s);
    var acc = GradSums(vec4<f32>(0.0), vec4<f32>(0.0));
    let len = thread_run_len();
    let stride = virtual_c();
    var o = rows_offset(s.start, s.ch);
    for (var j = 0u; j < len; j += 1u) {
        let r = s.start + j;
        if (r >= rows.x && r < rows.y) {
            acc = grads_step(acc, o, t);
        }
        o += stride;
        if (sweep_turn(j)) {
            workgroupBarrier();
        }
    }
    return acc;
}
