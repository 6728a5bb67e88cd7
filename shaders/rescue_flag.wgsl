// The rescue flag: the vec4 of `partials` at P().rescue_flag (after the
// partial states and the sums grads_rescue carries; the host clears it
// before each backward). A kernel that sums gradients in f32 raises it
// where a channel's sums came out non-finite (an overflow, or NaN and
// infinite inputs); the rescue kernels dispatched after it (grads_rescue
// and grads_rescue_finish in finalize.wgsl, backward_columns_rescue in
// columns.wgsl) then redo those channels carefully (grads_careful.wgsl),
// and return at once where it is down. The slow path stays out of the
// summing kernels: its code costs lavapipe even where it is not taken
// (10-30% of the column backward of 2 to 8 rows).
// (The column kernels of small inputs redo such sums themselves instead:
// INLINE_RESCUE in columns.wgsl and columns4.wgsl.)

@group(0) @binding(4) var<storage, read_write> partials: array<vec4<f32>>;

fn raise_rescue_flag() {
    // Every raising thread writes the same value.
    partials[P().rescue_flag] = vec4<f32>(1.0);
}

fn rescue_flag_up() -> bool {
    return partials[P().rescue_flag].x != 0.0;
}
