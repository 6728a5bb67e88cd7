// Elementwise passes with the per-channel terms written by finalize.wgsl:
//
// normalize:  y  = act((x - shift) * scale + offset + residual)
//             (scale = weight * invstd, offset = bias - (mean - shift) * scale;
//             the residual add and the ReLU only with the EPILOGUE pipeline
//             constant's bits); in eval, the planes and rows kernels compute
//             the terms from the module's state (FLAG_FROM_STATE)
// epilogue_grad: dy through the epilogue, dy * (y > 0) with a ReLU (the
//             mask from the forward's output y), else dy: the gradient of
//             the residual, and the output gradient the other passes take
// grad_input: dx = scale * (dy + slope * (x - shift) + intercept)
//             which is weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))
//             regrouped (in eval dx = dy * weight * invstd, x unread)
//
// Subtracting the shift first keeps data such as 1e4 + noise exact to f32
// rounding (the shift is the channel's first value, near its mean;
// shifted_affine4 in common.wgsl also covers x - shift overflowing).
//
// Each invocation handles SLAB vec4s, `P.stride` vec4s apart (slab_first);
// the host makes the stride a whole number of rows (C * L values, and a
// multiple of 4) or, for long rows, a block within one channel's run of L
// values, so the SLAB vec4s share their channels and the terms are read
// once.
// Three layouts, one entry point each, with no loops (which cost much more
// than the arithmetic on CPU adapters): `*_planes` when L % 4 == 0 (a vec4
// lies within one channel), `*_rows` for (N, C) inputs with C % 4 == 0 (a
// vec4 is four consecutive channels), and the general kernels, which look up
// each value's channel. Run slabs (`*_runs` entry points; long runs of odd L
// in rows too long for whole-row strides, and planes whose runs are not a
// whole number of slabs) are blocks of consecutive vec4s instead: one that
// lies within one run of L values takes that channel's terms once; the few
// that straddle two runs look up each vec4's channels. They are entry
// points of their own, not a branch on a flag: with both kinds in one
// kernel lavapipe ran the plain slabs 20-30% slower (the eval forward of
// (65536, 1, 64) 39-44 -> 31 ms, A/B). Values past numel in the last vec4
// land in the output's padding.

// x4 and dy4 are declared in common.wgsl; out, residual4 and
// store_normalized in store4.wgsl; the EPILOGUE constant in epilogue.wgsl.
@group(0) @binding(3) var<storage, read> terms: array<vec4<f32>>;
// The forward's output, for the ReLU mask in backward.
@group(0) @binding(13) var<storage, read> y4: array<vec4<elem>>;

// vec4s per invocation (unrolled by hand below).
const SLAB: u32 = 8u;

fn load_x(i: u32) -> vec4<f32> {
    return vec4<f32>(x4[i]);
}

// Packed terms of one channel (see PACKED_* in common.wgsl).
fn packed(kind: u32, ch: u32) -> vec4<f32> {
    return terms[packed_index(kind, ch)];
}

// Term t of channels 4q .. 4q + 3.
fn term4(t: u32, q: u32) -> vec4<f32> {
    return terms[t * padded_channels() / 4u + q];
}

// Packed terms of the four values of the vec4 at element e0, any layout:
// component k of the result holds value k's terms.
fn packed_general(kind: u32, e0: u32) -> array<vec4<f32>, 4> {
    var r: array<vec4<f32>, 4>;
    let q = (e0 + P().lead) / P().l;
    var l = (e0 + P().lead) - q * P().l;
    var ch = q % P().c;
    for (var k = 0u; k < 4u; k += 1u) {
        r[k] = packed(kind, ch);
        l += 1u;
        if (l == P().l) {
            l = 0u;
            ch += 1u;
            if (ch == P().c) {
                ch = 0u;
            }
        }
    }
    return r;
}

// Column j of four packed vec4s: term j of values 0 .. 3.
fn column(p: array<vec4<f32>, 4>, j: u32) -> vec4<f32> {
    return vec4<f32>(p[0][j], p[1][j], p[2][j], p[3][j]);
}

// The first vec4 of invocation g's slab (Slab in src/gpu/plan.rs): blocks
// of P.stride * SLAB vec4s, each invocation of a block taking every
// P.stride-th vec4 from its own.
fn slab_first(g: u32) -> u32 {
    let block = g / P().stride;
    return block * P().stride * SLAB + (g - block * P().stride);
}

fn in_tensor(i: u32) -> bool {
    return i < (P().numel + 3u) / 4u;
}

// The run of L values (row * C + channel) element e of the chunk lies in.
fn run_of(e: u32) -> u32 {
    return (e + P().lead) / P().l;
}

fn plane_channel(i: u32) -> u32 {
    return ((i * 4u + P().lead) / P().l) % P().c;
}

fn rows_lane(i: u32) -> u32 {
    return ((i * 4u + P().lead) % P().c) / 4u;
}

struct NormTerms {
    shift: vec4<f32>,
    scale: vec4<f32>,
    offset: vec4<f32>,
}

fn normalize_one(i: u32, t: NormTerms) {
    if (in_tensor(i)) {
        store_normalized(i, shifted_affine4(load_x(i), t.shift, t.scale, t.offset));
    }
}

fn normalize_slab(i: u32, t: NormTerms) {
    normalize_one(i, t);
    normalize_one(i + P().stride, t);
    normalize_one(i + 2u * P().stride, t);
    normalize_one(i + 3u * P().stride, t);
    normalize_one(i + 4u * P().stride, t);
    normalize_one(i + 5u * P().stride, t);
    normalize_one(i + 6u * P().stride, t);
    normalize_one(i + 7u * P().stride, t);
}

// Eval with FLAG_FROM_STATE: the `terms` binding holds the module's state
// (weight | bias | running_mean | running_var, C values each) and the
// terms are eval_prepare's, computed here: shift = running_mean,
// scale = weight / sqrt(running_var + eps), offset = bias.
fn from_state(w: vec4<f32>, b: vec4<f32>, rm: vec4<f32>, rv: vec4<f32>) -> NormTerms {
    let invstd = 1.0 / sqrt(rv + vec4<f32>(P().eps));
    if ((P().flags & FLAG_AFFINE) != 0u) {
        return NormTerms(rm, w * invstd, b);
    }
    return NormTerms(rm, invstd, vec4<f32>(0.0));
}

// State value k (a section) of channel ch, any C.
fn state_of(k: u32, ch: u32) -> f32 {
    let i = k * P().c + ch;
    return pick(terms[i / 4u], i % 4u);
}

fn from_state1(ch: u32) -> NormTerms {
    return from_state(
        vec4<f32>(state_of(0u, ch)),
        vec4<f32>(state_of(1u, ch)),
        vec4<f32>(state_of(2u, ch)),
        vec4<f32>(state_of(3u, ch)),
    );
}

// One channel's normalize terms: packed, or from the state in eval.
fn plane_terms(ch: u32) -> NormTerms {
    if ((P().flags & FLAG_FROM_STATE) != 0u) {
        return from_state1(ch);
    }
    let t = packed(PACKED_NORMALIZE, ch);
    return NormTerms(vec4<f32>(t.x), vec4<f32>(t.y), vec4<f32>(t.z));
}

// Run slabs (the *_runs entry points): a run slab spans fewer values than
// a run (Slab::of), so it crosses at most one run boundary; the values
// before element b, where the run after that of the slab's first value
// starts, take that run's channel's terms t0, the others the next run's
// t1. One path for every slab, no branch: looking up each vec4's channels
// where a slab straddles two runs cost lavapipe, which ran that branch
// masked for every slab, 40% of the odd-L shapes' eval.

// The chunk element where the run after run r starts (at least the first
// value of any vec4 whose first value lies in run r).
fn run_end(r: u32) -> u32 {
    return (r + 1u) * P().l - P().lead;
}

// Which values of vec4 i lie at or past element b (the next run's).
fn past(i: u32, b: u32) -> vec4<bool> {
    return vec4<u32>(i * 4u) + vec4<u32>(0u, 1u, 2u, 3u) >= vec4<u32>(b);
}

// normalize_one with t0's terms for the values before element b, t1's
// from it.
fn normalize_split(i: u32, b: u32, t0: NormTerms, t1: NormTerms) {
    if (in_tensor(i)) {
        let m = past(i, b);
        normalize_one(i, NormTerms(select(t0.shift, t1.shift, m), select(t0.scale, t1.scale, m), select(t0.offset, t1.offset, m)));
    }
}

// The run slab from vec4 i, whose first value lies in run r.
fn normalize_runs_slab(i: u32, r: u32) {
    let b = run_end(r);
    let t0 = plane_terms(r % P().c);
    let t1 = plane_terms((r + 1u) % P().c);
    normalize_split(i, b, t0, t1);
    normalize_split(i + P().stride, b, t0, t1);
    normalize_split(i + 2u * P().stride, b, t0, t1);
    normalize_split(i + 3u * P().stride, b, t0, t1);
    normalize_split(i + 4u * P().stride, b, t0, t1);
    normalize_split(i + 5u * P().stride, b, t0, t1);
    normalize_split(i + 6u * P().stride, b, t0, t1);
    normalize_split(i + 7u * P().stride, b, t0, t1);
}

@compute @workgroup_size(WG)
fn normalize_planes(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (in_tensor(i)) {
        normalize_slab(i, plane_terms(plane_channel(i)));
    }
}

@compute @workgroup_size(WG)
fn normalize_planes_runs(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (!in_tensor(i)) {
        return;
    }
    normalize_runs_slab(i, run_of(i * 4u));
}

@compute @workgroup_size(WG)
fn normalize_rows(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (in_tensor(i)) {
        let q = rows_lane(i);
        if ((P().flags & FLAG_FROM_STATE) != 0u) {
            // C % 4 == 0: four channels' state values are one vec4.
            let c4 = P().c / 4u;
            normalize_slab(i, from_state(terms[q], terms[c4 + q], terms[2u * c4 + q], terms[3u * c4 + q]));
        } else {
            normalize_slab(i, NormTerms(term4(TERM_SHIFT, q), term4(TERM_SCALE, q), term4(TERM_OFFSET, q)));
        }
    }
}

// Whole-row strides: the slab's vec4s share one channel pattern.
@compute @workgroup_size(WG)
fn normalize(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (in_tensor(i)) {
        let t = packed_general(PACKED_NORMALIZE, i * 4u);
        normalize_slab(i, NormTerms(column(t, 0u), column(t, 1u), column(t, 2u)));
    }
}

@compute @workgroup_size(WG)
fn normalize_runs(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (!in_tensor(i)) {
        return;
    }
    normalize_runs_slab(i, run_of(i * 4u));
}

struct GradTerms {
    shift: vec4<f32>,
    scale: vec4<f32>,
    slope: vec4<f32>,
    intercept: vec4<f32>,
}

fn grad_one(i: u32, t: GradTerms) {
    if (in_tensor(i)) {
        let g = vec4<f32>(dy4[i]);
        if ((P().flags & FLAG_BATCH_STATS) == 0u) {
            // Eval: x is not read (grad_input4 in common.wgsl).
            store(i, t.scale * g);
        } else {
            store(i, grad_input4(load_x(i), g, t.shift, t.scale, t.slope, t.intercept));
        }
    }
}

fn grad_slab(i: u32, t: GradTerms) {
    grad_one(i, t);
    grad_one(i + P().stride, t);
    grad_one(i + 2u * P().stride, t);
    grad_one(i + 3u * P().stride, t);
    grad_one(i + 4u * P().stride, t);
    grad_one(i + 5u * P().stride, t);
    grad_one(i + 6u * P().stride, t);
    grad_one(i + 7u * P().stride, t);
}

// One channel's gradient terms.
fn plane_grad_terms(ch: u32) -> GradTerms {
    let t = packed(PACKED_GRAD, ch);
    return GradTerms(vec4<f32>(t.x), vec4<f32>(t.y), vec4<f32>(t.z), vec4<f32>(t.w));
}

// grad_one with t0's terms for the values before element b, t1's from it
// (normalize_split).
fn grad_split(i: u32, b: u32, t0: GradTerms, t1: GradTerms) {
    if (in_tensor(i)) {
        let m = past(i, b);
        grad_one(i, GradTerms(
            select(t0.shift, t1.shift, m),
            select(t0.scale, t1.scale, m),
            select(t0.slope, t1.slope, m),
            select(t0.intercept, t1.intercept, m),
        ));
    }
}

// The run slab from vec4 i, whose first value lies in run r
// (normalize_runs_slab).
fn grad_runs_slab(i: u32, r: u32) {
    let b = run_end(r);
    let t0 = plane_grad_terms(r % P().c);
    let t1 = plane_grad_terms((r + 1u) % P().c);
    grad_split(i, b, t0, t1);
    grad_split(i + P().stride, b, t0, t1);
    grad_split(i + 2u * P().stride, b, t0, t1);
    grad_split(i + 3u * P().stride, b, t0, t1);
    grad_split(i + 4u * P().stride, b, t0, t1);
    grad_split(i + 5u * P().stride, b, t0, t1);
    grad_split(i + 6u * P().stride, b, t0, t1);
    grad_split(i + 7u * P().stride, b, t0, t1);
}

@compute @workgroup_size(WG)
fn grad_input_planes(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (in_tensor(i)) {
        grad_slab(i, plane_grad_terms(plane_channel(i)));
    }
}

@compute @workgroup_size(WG)
fn grad_input_planes_runs(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (!in_tensor(i)) {
        return;
    }
    grad_runs_slab(i, run_of(i * 4u));
}

@compute @workgroup_size(WG)
fn grad_input_rows(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (in_tensor(i)) {
        let q = rows_lane(i);
        grad_slab(i, GradTerms(
            term4(TERM_DX_SHIFT, q),
            term4(TERM_SCALE, q),
            term4(TERM_DX_SLOPE, q),
            term4(TERM_DX_INTERCEPT, q),
        ));
    }
}

// Whole-row strides (as `normalize`).
@compute @workgroup_size(WG)
fn grad_input(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (in_tensor(i)) {
        let t = packed_general(PACKED_GRAD, i * 4u);
        grad_slab(i, GradTerms(column(t, 0u), column(t, 1u), column(t, 2u), column(t, 3u)));
    }
}

@compute @workgroup_size(WG)
fn grad_input_runs(ids: Ids) {
    let i = slab_first(global_index(ids));
    if (!in_tensor(i)) {
        return;
    }
    grad_runs_slab(i, run_of(i * 4u));
}

// The output gradient through the epilogue, one vec4 per invocation.
// PyTorch's ReLU backward passes the gradient where the output is not
// <= 0 (so a NaN output passes it too).
@compute @workgroup_size(WG)
fn epilogue_grad(ids: Ids) {
    let i = global_index(ids);
    if (in_tensor(i)) {
        let g = vec4<f32>(dy4[i]);
        if ((EPILOGUE & EPILOGUE_RELU) != 0u) {
            store(i, select(g, vec4<f32>(0.0), relu_stops(vec4<f32>(y4[i]))));
        } else {
            store(i, g);
        }
    }
}
