// The gradient sums' rescue over the split reductions, in the finalize
// module after finalize.wgsl (whose helpers it uses):
//
// grads_rescue:       after grads_finalize, once per chunk (the chunk's
//   params): channels whose sums came out non-finite (an overflow, or NaN
//   and infinite inputs; grads_finalize marks them: a NaN TERM_DX_SHIFT) are
//   summed again carefully (grads_careful.wgsl), one window of
//   P().rescue_window values of a channel per item, into the partials buffer
//   (no longer read by then: two vec4s per channel and window, after the
//   carried sums; a chunk of one window a channel adds it to the carried
//   sums at once). Four storage bindings (x, dy, terms, partials), as
//   every kernel of the split path: WebGPU's downlevel limit.
// grads_rescue_merge: after grads_rescue over each chunk: a marked
//   channel's window sums added in order to the sums carried from chunk to
//   chunk (two vec4s per channel).
// grads_rescue_finish: grad_weight, grad_bias and the grad_input terms of
//   the marked channels from the carried sums.

// The pair of sums at vec4 i of `partials` (two vec4s), and storing one.
fn sums_at(i: u32) -> CarefulPair {
    return CarefulPair(careful_unpack(partials[i]), careful_unpack(partials[i + 1u]));
}

fn store_sums(i: u32, acc: CarefulPair) {
    partials[i] = careful_pack(acc.dy);
    partials[i + 1u] = careful_pack(acc.dyx);
}

// Channel ch's sums carried from chunk to chunk.
fn carried_sums(ch: u32) -> CarefulPair {
    return sums_at(2u * ch);
}

// Window w's sums of channel ch (grads_rescue), after the carried sums.
fn window_index(w: u32, ch: u32) -> u32 {
    return 2u * (P().c * (w + 1u) + ch);
}

// Each (channel, window) item of the chunk: the window's careful sums
// (careful_window), its threads taking items a grid apart (at most four
// each: the host sizes the grid, rescue_window_groups).
@compute @workgroup_size(WG)
fn grads_rescue(ids: Ids) {
    if (!rescue_flag_up()) {
        return;
    }
    let windows = P().rescue_windows;
    let items = P().c * windows;
    for (var i = global_index(ids); i < items; i += rescue_stride(ids)) {
        let ch = i / windows;
        if (!marked_for_rescue(ch)) {
            continue;
        }
        let w = i % windows;
        var acc = careful_window(ch, w, saved_grad_terms(ch));
        if (windows > 1u) {
            store_sums(window_index(w, ch), acc);
            continue;
        }
        // One window: straight onto the carried sums (no merge follows).
        if ((P().flags & FLAG_FIRST_CHUNK) == 0u) {
            acc = careful_merge_pair(carried_sums(ch), acc);
        }
        store_sums(2u * ch, acc);
    }
}

// After grads_rescue over a chunk of more than one window per channel (the
// host dispatches it only there): each marked channel's window sums added
// in order to the sums carried from the chunks before (none before the
// first), carried on.
@compute @workgroup_size(WG)
fn grads_rescue_merge(ids: Ids) {
    if (!rescue_flag_up() || P().rescue_windows < 2u) {
        return;
    }
    for (var ch = global_index(ids); ch < P().c; ch += rescue_stride(ids)) {
        if (!marked_for_rescue(ch)) {
            continue;
        }
        var acc = careful_empty();
        if ((P().flags & FLAG_FIRST_CHUNK) == 0u) {
            acc = carried_sums(ch);
        }
        for (var w = 0u; w < P().rescue_windows; w += 1u) {
            acc = careful_merge_pair(acc, sums_at(window_index(w, ch)));
        }
        store_sums(2u * ch, acc);
    }
}

@compute @workgroup_size(WG)
fn grads_rescue_finish(ids: Ids) {
    if (!rescue_flag_up()) {
        return;
    }
    for (var ch = global_index(ids); ch < P().c; ch += rescue_stride(ids)) {
        if (marked_for_rescue(ch)) {
            finish_totals(ch, careful_totals(carried_sums(ch)));
        }
    }
}
