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

// Shift of channel ch: its first value (n = 0, l = 0) when finite and bound.
// Statistics are accumulated relative to it, which keeps data such as
// 1e4 + noise exact to f32 rounding.
fn shift_of(ch: u32) -> f32 {
    let i = ch * P().l;
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

// 2^-e for a state's exponent e.
fn unit_of(e: f32) -> f32 {
    return ldexp(1.0, -i32(e));
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
    let f = ldexp(1.0, i32(st.w) - i32(e));
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
    var w = merge_tags(a.w, b.w);
    var ra = a;
    var rb = b;
    if (is_finite(w)) {
        ra = rescaled(a, w);
        rb = rescaled(b, w);
        w = exponent_for(w, max(abs(ra.y), abs(rb.y)));
        ra = rescaled(ra, w);
        rb = rescaled(rb, w);
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

// Four channels' moment states sharing one count (the rows variant):
// the same rules as above, branch-free per channel.
struct Moments4 {
    mean: vec4<f32>,
    m2: vec4<f32>,
    tag: vec4<f32>,
}

// 2^(src - dst) where both are exponents, 1 where either is a poison tag.
fn units_between(src: vec4<f32>, dst: vec4<f32>) -> vec4<f32> {
    let fin = finite4(src) & finite4(dst);
    return select(vec4<f32>(1.0), ldexp(vec4<f32>(1.0), vec4<i32>(select(vec4<f32>(0.0), src - dst, fin))), fin);
}

// The exponents that keep magnitudes `mag` below 2, per channel (see
// exponent_for); poisoned channels keep their tag.
fn exponents_for(tag: vec4<f32>, mag: vec4<f32>) -> vec4<f32> {
    let big = (mag > vec4<f32>(RESCALE_LIMIT)) & finite4(tag) & finite4(mag);
    let k = vec4<f32>((bitcast<vec4<u32>>(mag) >> vec4<u32>(23u)) & vec4<u32>(0xffu)) - vec4<f32>(126.0);
    return select(tag, min(tag + k, vec4<f32>(MAX_EXPONENT)), big);
}

// The sums of NaN/infinite values a tag records (0 for an exponent).
fn poison4(tag: vec4<f32>) -> vec4<f32> {
    return select(tag, vec4<f32>(0.0), finite4(tag));
}

// merge_moments for four channels with counts na and nb.
fn merge_moments4(na: f32, a: Moments4, nb: f32, b: Moments4) -> Moments4 {
    if (nb == 0.0) {
        return a;
    }
    if (na == 0.0) {
        return b;
    }
    let fin = finite4(a.tag) & finite4(b.tag);
    var e = select(vec4<f32>(0.0), max(a.tag, b.tag), fin);
    let mag = max(abs(a.mean * units_between(a.tag, e)), abs(b.mean * units_between(b.tag, e)));
    e = select(e, exponents_for(e, mag), fin);
    let fa = units_between(a.tag, e);
    let fb = units_between(b.tag, e);
    let ma = a.mean * fa;
    let mb = b.mean * fb;
    let n = na + nb;
    let wb = nb / n;
    let d = mb - ma;
    return Moments4(
        ma + d * wb,
        a.m2 * fa * fa + b.m2 * fb * fb + d * d * (na * wb),
        select(poison4(a.tag) + poison4(b.tag), e, fin),
    );
}

// absorb_outliers for four channels and one value each.
fn absorb_outliers4(st: Moments4, v: vec4<f32>) -> Moments4 {
    let fin = finite4(v);
    let tag = select(poison4(st.tag) + v, st.tag, fin);
    let e = exponents_for(tag, select(vec4<f32>(0.0), abs(v), fin));
    let f = units_between(tag, e);
    return Moments4(st.mean * f, st.m2 * f * f, e);
}

// Whether values `v` fit the state's units (no NaN, infinity or outlier).
fn in_range(v: vec4<f32>) -> bool {
    return all(abs(v) <= vec4<f32>(RESCALE_LIMIT));
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

// Values e .. e + 3 of x: one vec4 where e % 4 == 0, else the two it
// spans (the rows of (N, C) inputs with C % 4 != 0). Past the tensor's end
// the second load reads whatever the bound buffer holds there: only lanes
// past the last channel use it.
fn load4(e: u32) -> vec4<f32> {
    let v = e / 4u;
    let a = vec4<f32>(x4[v]);
    let p = e % 4u;
    if (p == 0u) {
        return a;
    }
    return shifted4(a, vec4<f32>(x4[v + 1u]), p);
}

// The same for dy.
fn load4_dy(e: u32) -> vec4<f32> {
    let v = e / 4u;
    let a = vec4<f32>(dy4[v]);
    let p = e % 4u;
    if (p == 0u) {
        return a;
    }
    return shifted4(a, vec4<f32>(dy4[v + 1u]), p);
}

// Components p .. p + 3 of (a, b), p in 1 .. 3.
fn shifted4(a: vec4<f32>, b: vec4<f32>, p: u32) -> vec4<f32> {
    let one = vec4<f32>(a.y, a.z, a.w, b.x);
    let two = vec4<f32>(a.z, a.w, b.x, b.y);
    let three = vec4<f32>(a.w, b.x, b.y, b.z);
    return select(select(one, two, p == 2u), three, p == 3u);
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

// The units of four channels' tags (1 where poisoned).
fn units4(tag: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(1.0), ldexp(vec4<f32>(1.0), -vec4<i32>(tag)), finite4(tag));
}

// 2^e (1 where poisoned): never divide by u twice, which a compiler may
// fold into u * u, flushed to 0 for e > 63 (NaN running variance, H100).
fn inv_units4(tag: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(1.0), ldexp(vec4<f32>(1.0), vec4<i32>(tag)), finite4(tag));
}

// Unbiased variance from M2 in units 2^-e: one exact scaling by 2^(2e)
// where that is an f32 (e <= 63), else (sd * 2^e)^2.
fn unbiased4(m2: vec4<f32>, n: f32, tag: vec4<f32>) -> vec4<f32> {
    let e = select(vec4<f32>(0.0), tag, finite4(tag));
    let var_n1 = m2 / (n - 1.0);
    let sd = sqrt(var_n1) * inv_units4(tag);
    let small = var_n1 * ldexp(vec4<f32>(1.0), 2 * vec4<i32>(min(e, vec4<f32>(63.0))));
    return select(sd * sd, small, e <= vec4<f32>(63.0));
}

// invstd (subnormal only for std > 2^126) reads 0 where adapters flush
// subnormals (NVIDIA does): NaN then, never silently the bias.
fn unflushed4(invstd: vec4<f32>) -> vec4<f32> {
    return select(invstd, vec4<f32>(bitcast<f32>(0x7fc00000u)), invstd == vec4<f32>(0.0));
}

// Four channels' moment states with one shared count (the rows reductions
// and the columns kernels).
struct RowsState {
    cnt: f32,
    mean: vec4<f32>,
    m2: vec4<f32>,
    tag: vec4<f32>,
}

// Four channels' states over `count` runs of four consecutive values of x
// (x4, common.wgsl), starting at element `first` and then every `stride`
// elements (any alignment: see load4), relative to `shift`. The fast pass keeps
// the starting units; only where its result is not finite does the careful
// pass run, which raises exponents before any value could overflow and
// records NaN/infinite values.
fn rows_moments(first: u32, stride: u32, count: u32, shift: vec4<f32>) -> RowsState {
    let fast = rows_fold(first, stride, count, shift, false);
    if (fast_state_ok(fast.mean, fast.m2)) {
        return fast;
    }
    return rows_fold(first, stride, count, shift, true);
}

fn rows_fold(first: u32, stride: u32, count: u32, shift: vec4<f32>, careful: bool) -> RowsState {
    var f = rows_fold_start(shift);
    var o = first;
    for (var k = 0u; k < count; k += 1u) {
        rows_fold_step(&f, load4(o), shift, k, careful);
        o += stride;
    }
    return RowsState(f32(count), f.mean, f.m2, f.tag);
}

// A fold of four channels' rows in progress: mean and M2 in units of
// 2^tag (u = 2^-tag, shu = shift * u).
struct RowsFold {
    mean: vec4<f32>,
    m2: vec4<f32>,
    tag: vec4<f32>,
    u: vec4<f32>,
    shu: vec4<f32>,
}

fn rows_fold_start(shift: vec4<f32>) -> RowsFold {
    let tag = vec4<f32>(exponent_of(shift.x), exponent_of(shift.y), exponent_of(shift.z), exponent_of(shift.w));
    let u = units4(tag);
    return RowsFold(vec4<f32>(0.0), vec4<f32>(0.0), tag, u, shift * u);
}

// Row k (from 0) of the fold: Welford's update, after the careful pass
// raised the units for an outlier (or recorded a NaN / infinity).
fn rows_fold_step(f: ptr<function, RowsFold>, raw: vec4<f32>, shift: vec4<f32>, k: u32, careful: bool) {
    var v = fma(raw, (*f).u, -(*f).shu);
    if (careful && !in_range(v)) {
        let st = absorb_outliers4(Moments4((*f).mean, (*f).m2, (*f).tag), v);
        (*f).mean = st.mean;
        (*f).m2 = st.m2;
        (*f).tag = st.tag;
        (*f).u = units4(st.tag);
        (*f).shu = shift * (*f).u;
        v = fma(raw, (*f).u, -(*f).shu);
    }
    let d = v - (*f).mean;
    (*f).mean += d / f32(k + 1u);
    (*f).m2 += d * (v - (*f).mean);
}
