// Paired lanes of the rows reductions (after reduce_rows.wgsl, whose
// entry points call moments_paired and grads_paired under
// FLAG_PAIRED_LANES).
//
// With per-thread partials (CPU adapters) over chunks of whole rows of (N, C) with
// C % 4 == 0 and C >= 64 (no lead, no tail; ReducePlan::paired on the
// host), a thread takes lanes q and q + PAIR_GAP of its workgroup's
// 2 * lanes_per_group lanes, so eight consecutive invocations (a SIMD group
// of a CPU adapter, which runs each group through its whole share) read
// 256 contiguous bytes of each row instead of 128 before striding a whole
// row. Both lanes walk the same rows; each writes its own partials, which
// equal the single-lane kernels' over the same rows.
const PAIR_GAP: u32 = 8u;

fn paired() -> bool {
    return THREAD_PARTIALS && (P().flags & FLAG_PAIRED_LANES) != 0u;
}

// Share s (whose ch counts lanes_per_group lanes per tile) with its first
// lane; the second is ch + PAIR_GAP.
fn pair_first(s: Share) -> Share {
    let lpg = P().lanes_per_group;
    let m = s.ch % lpg;
    var a = s;
    a.ch = (s.ch / lpg) * 2u * lpg + (m / PAIR_GAP) * 2u * PAIR_GAP + m % PAIR_GAP;
    return a;
}

fn pair_second(a: Share) -> Share {
    var b = a;
    b.ch = a.ch + PAIR_GAP;
    return b;
}

fn write_rows_state(s: Share, st: RowsState) {
    write_partial4(s, vec4<f32>(st.cnt), st.mean, st.m2, st.tag);
}

// The moment states of share s's two lanes (moments_partial_rows).
fn moments_paired(s: Share) {
    let a = pair_first(s);
    let b = pair_second(a);
    if (!live4(a)) {
        return;
    }
    if (!live4(b)) {
        write_rows_state(a, rows_state(a));
        return;
    }
    let rows = row_range(a);
    let count = rows.y - rows.x;
    let first = select(0u, rows_offset(rows.x, a.ch), count > 0u);
    let st = rows_moments2(first, virtual_c(), count, shift4(a.ch), shift4(b.ch), 4u * PAIR_GAP);
    write_rows_state(a, st.a);
    write_rows_state(b, st.b);
}

// Two lanes' rows_moments in one walk, the second `gap` elements after
// the first (moments.wgsl's rows_fold for each): the same fast fold,
// so each result equals its rows_moments; a lane whose fast result is not
// usable is folded again carefully on its own.
struct RowsPair {
    a: RowsState,
    b: RowsState,
}

fn rows_moments2(first: u32, stride: u32, count: u32, sa: vec4<f32>, sb: vec4<f32>, gap: u32) -> RowsPair {
    var fa = rows_fold_start(sa);
    var fb = rows_fold_start(sb);
    var o = first;
    for (var k = 0u; k < count; k += 1u) {
        rows_fold_step(&fa, load4(o), sa, k, false);
        rows_fold_step(&fb, load4(o + gap), sb, k, false);
        o += stride;
    }
    var a = RowsState(f32(count), fa.mean, fa.m2, fa.tag);
    var b = RowsState(f32(count), fb.mean, fb.m2, fb.tag);
    if (!fast_state_ok(a.mean, a.m2)) {
        a = rows_fold(first, stride, count, sa, true);
    }
    if (!fast_state_ok(b.mean, b.m2)) {
        b = rows_fold(first + gap, stride, count, sb, true);
    }
    return RowsPair(a, b);
}

// The gradient sums of share s's two lanes (grads_partial_rows).
fn grads_paired(s: Share) {
    let a = pair_first(s);
    let b = pair_second(a);
    if (!live4(a)) {
        return;
    }
    let ta = xhat_terms(a.ch);
    let rows = row_range(a);
    if (!live4(b)) {
        write_grad_sums(a, lane_grads(a.ch, rows, 1u, ta));
        return;
    }
    let tb = xhat_terms(b.ch);
    var ga = GradSums(vec4<f32>(0.0), vec4<f32>(0.0));
    var gb = ga;
    for (var r = rows.x; r < rows.y; r += 1u) {
        let o = rows_offset(r, a.ch);
        ga = grads_step(ga, o, ta);
        gb = grads_step(gb, o + 4u * PAIR_GAP, tb);
    }
    write_grad_sums(a, ga);
    write_grad_sums(b, gb);
}

