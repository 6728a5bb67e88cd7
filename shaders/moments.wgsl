// Moment states, shared by the reductions and the finalize steps.
//
// A state is vec4(count, mean, M2, tag) of values taken relative to the
// channel's shift and measured in units of 2^e: each value x enters as
// v = x * 2^-e - shift * 2^-e, exactly (x - shift) * 2^-e as long as
// nothing overflows, and nothing does, since both products are scaled
// first. `tag` is the exponent e, a small whole number, for a state of
// finite values; a value that is NaN or infinite instead sets `tag` to the
// sum of such values seen (NaN, +inf or -inf), which becomes PyTorch's mean
// for the channel (its sum / n) while M2 turns NaN.
//
// e starts at the shift's binary exponent (scale_of), so data near the
// shift has |v| < 2. When a value would exceed RESCALE_LIMIT in the current
// units, the state raises its exponent until it fits: mean scales by
// 2^-d, M2 by 2^-2d. So values of any finite magnitude, in any order, keep
// M2 below 2^96: |v| < 2^32, and at most 2^32 values per state.
// Scaling by a power of two is exact; states with different exponents are
// aligned to the larger one before they merge (Chan's formula). The
// variance is never formed as E[x^2] - E[x]^2.

const RESCALE_LIMIT: f32 = 4294967296.0;
// The largest M2 a fast-pass state (kept in its starting units) may have
// and still be merged: its values then lie within 2^40 of its mean, so the
// merges of up to 2^32 values stay below 2^114.
const FAST_M2_LIMIT: f32 = 1208925819614629174706176.0;

// Whether a fast-pass state (mean, M2) may be kept: finite and within the
// bounds the merges rely on; otherwise the careful pass runs.
fn fast_state_ok(mean: vec4<f32>, m2: vec4<f32>) -> bool {
    return all(finite4(mean) & finite4(m2))
        && all(abs(mean) <= vec4<f32>(RESCALE_LIMIT))
        && all(m2 <= vec4<f32>(FAST_M2_LIMIT));
}
// The largest exponent: 2^-126 is the smallest normal f32.
const MAX_EXPONENT: f32 = 126.0;

// Shift of channel ch: its first value (n = 0, l = 0) when finite and bound
// (at head[ch] where the first row was gathered, heads.wgsl). Statistics are
// accumulated relative to it, which keeps data such as 1e4 + noise exact to
// f32 rounding.
fn shift_of(ch: u32) -> f32 {
    let gathered = (P().flags & FLAG_GATHERED_HEADS) != 0u;
    let i = select(ch * P().l, ch, gathered);
    if (i >= arrayLength(&head)) {
        return 0.0;
    }
    let v = f32(head[i]);
    return select(0.0, v, is_finite(v));
}

// The starting exponent: the shift's binary exponent (0 below 1), so the
// shift itself is below 2 in the state's units.
fn exponent_of(shift: f32) -> f32 {
    let e = (bitcast<u32>(abs(shift)) >> 23u) & 0xffu;
    return f32(min(max(e, 127u) - 127u, 126u));
}

// 2^k for integers k in [-126, 127], exactly (pow2_4, moments4.wgsl).
fn pow2(k: i32) -> f32 {
    return bitcast<f32>(u32(k + 127) << 23u);
}

// 2^-e for a state's exponent e.
fn unit_of(e: f32) -> f32 {
    return pow2(-i32(e));
}

// A moment state with no values yet, in units of 2^e.
fn empty_state(e: f32) -> vec4<f32> {
    return vec4<f32>(0.0, 0.0, 0.0, e);
}

// The state in units of 2^e (e at least its own exponent); poisoned
// states are left as they are.
fn rescaled(st: vec4<f32>, e: f32) -> vec4<f32> {
    if (!is_finite(st.w) || st.w == e) {
        return st;
    }
    let f = pow2(i32(st.w) - i32(e));
    return vec4<f32>(st.x, st.y * f, st.z * f * f, e);
}

// `tag` of two merged states: the larger exponent, or the sum of the
// NaN/infinite values either has seen.
fn merge_tags(a: f32, b: f32) -> f32 {
    if (is_finite(a) && is_finite(b)) {
        return max(a, b);
    }
    return select(0.0, a, !is_finite(a)) + select(0.0, b, !is_finite(b));
}

// The exponent that keeps means of magnitude `mag` (in units of 2^e)
// below 2: e itself unless mag exceeds RESCALE_LIMIT.
fn exponent_for(e: f32, mag: f32) -> f32 {
    if (mag <= RESCALE_LIMIT) {
        return e;
    }
    // mag < 2^k, so mag * 2^(1-k) < 2.
    let k = f32((bitcast<u32>(mag) >> 23u) & 0xffu) - 126.0;
    return min(e + k, MAX_EXPONENT);
}

// Chan et al. merge of two moment states, aligned to a common exponent
// large enough that their means (and so the difference of means, squared
// and weighted by the counts) stay far from f32's range.
fn merge_moments(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (b.x == 0.0) {
        return a;
    }
    if (a.x == 0.0) {
        return b;
    }
    var w = a.w;
    var ra = a;
    var rb = b;
    // Both states in the same finite units with means in range (the common
    // case): the alignment below would change nothing, so it is skipped
    // (as in merge_moments4, where that halved the rows reductions' merge
    // on an H100).
    if (!(a.w == b.w && is_finite(a.w) && max(abs(a.y), abs(b.y)) <= RESCALE_LIMIT)) {
        w = merge_tags(a.w, b.w);
        if (is_finite(w)) {
            ra = rescaled(a, w);
            rb = rescaled(b, w);
            w = exponent_for(w, max(abs(ra.y), abs(rb.y)));
            ra = rescaled(ra, w);
            rb = rescaled(rb, w);
        }
    }
    let n = ra.x + rb.x;
    let wb = rb.x / n;
    let d = rb.y - ra.y;
    let mean = ra.y + d * wb;
    let m2 = ra.z + rb.z + d * d * (ra.x * wb);
    return vec4<f32>(n, mean, m2, w);
}

// The state after values `v` (in the state's current units) that are not
// all within RESCALE_LIMIT: NaN and infinite values poison `tag`, and a
// finite value too large raises the exponent so that it fits. The caller
// recomputes the values in the new units.
fn absorb_outliers(st: vec4<f32>, v: vec4<f32>) -> vec4<f32> {
    let fin = finite4(v);
    var out = st;
    if (!all(fin)) {
        let bad = select(v, vec4<f32>(0.0), fin);
        out.w = select(0.0, out.w, !is_finite(out.w)) + (bad.x + bad.y + bad.z + bad.w);
    }
    let a = select(vec4<f32>(0.0), abs(v), fin);
    let mag = max(max(a.x, a.y), max(a.z, a.w));
    if (is_finite(out.w)) {
        out = rescaled(out, exponent_for(out.w, mag));
    }
    return out;
}

// The channel statistics of a merged state over n values, with shift.
struct ChannelStats {
    // Mean - shift (or PyTorch's mean for NaN/infinite inputs, then
    // `poisoned`).
    mean: f32,
    // 1 / sqrt(var + eps), var the biased variance.
    invstd: f32,
    // Unbiased variance, var * n / (n - 1) (inf past f32's range, as a
    // float32 PyTorch buffer holds it).
    unbiased: f32,
    // The state's unit 2^-e, and its scaled mean and M2 (for export).
    unit: f32,
    poisoned: bool,
}

// The (shift, mean - shift) pair the terms keep for channel statistics r
// of state st: the channel's shift and r.mean, or (0, mean) where
// mean - shift overflows f32 (values of both signs near its limit), so
// every term stays finite.
fn stats_base(shift: f32, st: vec4<f32>, r: ChannelStats) -> vec2<f32> {
    if (r.poisoned || is_finite(r.mean)) {
        return vec2<f32>(shift, r.mean);
    }
    return vec2<f32>(0.0, (shift * r.unit + st.y) * inv_units4(vec4<f32>(st.w)).x);
}

fn channel_stats(st: vec4<f32>, n: f32, eps: f32) -> ChannelStats {
    var r: ChannelStats;
    r.poisoned = !is_finite(st.w);
    if (r.poisoned) {
        // Welford's mean turns NaN on infinite values, where PyTorch's
        // sum / n gives +-inf: tag holds that sum's class.
        r.mean = st.w;
        let nan = bitcast<f32>(0x7fc00000u);
        r.invstd = nan;
        r.unbiased = nan;
        r.unit = 1.0;
        return r;
    }
    let u = unit_of(st.w);
    let var_u = st.z / n;
    r.unit = u;
    r.mean = st.y * inv_units4(vec4<f32>(st.w)).x;
    // A constant channel has var 0 and invstd 1 / sqrt(eps) exactly, also
    // where eps * u^2 underflows.
    r.invstd = unflushed4(vec4<f32>(select(u / sqrt(var_u + eps * u * u), 1.0 / sqrt(eps), var_u == 0.0))).x;
    r.unbiased = unbiased4(vec4<f32>(st.z), n, vec4<f32>(st.w)).x;
    return r;
}

// Welford update with one value (in the state's units).
fn welford(acc: vec4<f32>, v: f32) -> vec4<f32> {
    let cnt = acc.x + 1.0;
    let d = v - acc.y;
    let mean = acc.y + d / cnt;
    return vec4<f32>(cnt, mean, acc.z + d * (v - mean), acc.w);
}

// The unit of a state, for values entering it (1 once poisoned).
fn state_unit(acc: vec4<f32>) -> f32 {
    return select(1.0, unit_of(acc.w), is_finite(acc.w));
}

// A fold's moment state with its unit and the shift in that unit: each
// value x enters as fma(x, u, -shu) = x * u - shu (x * u is exact), which
// no compiler factors into (x - shift) * u, overflowing near f32's limit.
struct Fold {
    acc: vec4<f32>,
    u: f32,
    shu: f32,
}

// A fold with no values yet, relative to `shift`.
fn fold_start(shift: f32) -> Fold {
    let acc = empty_state(exponent_of(shift));
    let u = state_unit(acc);
    return Fold(acc, u, shift * u);
}

// The fold after values `v` (in its current unit) not all within range:
// absorb_outliers, then the new unit; the caller recomputes its values.
fn fold_absorb(f: Fold, v: vec4<f32>, shift: f32) -> Fold {
    let acc = absorb_outliers(f.acc, v);
    let u = state_unit(acc);
    return Fold(acc, u, shift * u);
}
