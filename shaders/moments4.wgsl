// Four channels' moment states, for the rows reductions, the column
// kernels and the finalize steps: the rules of moments.wgsl, branch-free
// per channel, with the loads of four consecutive values, the unit
// conversions of four tags, and the rows folds.

// Four channels' moment states sharing one count (the rows variant).
struct Moments4 {
    mean: vec4<f32>,
    m2: vec4<f32>,
    tag: vec4<f32>,
}

// 2^k for integers k in [-126, 127], exactly (a normal f32: its exponent
// field is k + 127): ldexp(1.0, k) without ldexp, which lavapipe runs
// per component.
fn pow2_4(k: vec4<i32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(k + vec4<i32>(127)) << vec4<u32>(23u));
}

// 2^(src - dst) where both are exponents, 1 where either is a poison tag.
fn units_between(src: vec4<f32>, dst: vec4<f32>) -> vec4<f32> {
    let fin = finite4(src) & finite4(dst);
    return select(vec4<f32>(1.0), pow2_4(vec4<i32>(select(vec4<f32>(0.0), src - dst, fin))), fin);
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
    // Both states in the same finite units with means in range (the common
    // case): nothing to align, the unit factors stay 1 and the tag is kept.
    // Skipping the exponent arithmetic there halved the rows reductions on
    // an H100 (their workgroup merge is 18 of these per lane).
    var fa = vec4<f32>(1.0);
    var fb = vec4<f32>(1.0);
    var tag = a.tag;
    if (!(all(a.tag == b.tag) && all(max(abs(a.mean), abs(b.mean)) <= vec4<f32>(RESCALE_LIMIT)))) {
        let fin = finite4(a.tag) & finite4(b.tag);
        var e = select(vec4<f32>(0.0), max(a.tag, b.tag), fin);
        let mag = max(abs(a.mean * units_between(a.tag, e)), abs(b.mean * units_between(b.tag, e)));
        e = select(e, exponents_for(e, mag), fin);
        fa = units_between(a.tag, e);
        fb = units_between(b.tag, e);
        tag = select(poison4(a.tag) + poison4(b.tag), e, fin);
    }
    let ma = a.mean * fa;
    let mb = b.mean * fb;
    let n = na + nb;
    let wb = nb / n;
    let d = mb - ma;
    return Moments4(ma + d * wb, a.m2 * fa * fa + b.m2 * fb * fb + d * d * (na * wb), tag);
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
// NaN fails on its bits: llvmpipe's GL compiled `!all(abs(v) <= limit)`
// into `any(abs(v) > limit)`, which a NaN passes, so a NaN after an
// infinity went into the mean unrecorded and the channel's mean came out
// infinite instead of NaN.
fn in_range(v: vec4<f32>) -> bool {
    return all(finite4(v)) && all(abs(v) <= vec4<f32>(RESCALE_LIMIT));
}

// Values e .. e + 3 of x, e a multiple of 4: the four-channel lanes
// are whole aligned vec4s (rows of C % 4 == 0, whose chunks start on vec4
// boundaries, or the virtual rows of odd C in one chunk; src/gpu/plan.rs).
// (Loads of either alignment, which branched on e % 4 in every step, cost
// lavapipe 5-12% of the rows reductions' partial passes.)
fn load4(e: u32) -> vec4<f32> {
    return vec4<f32>(x4[e / 4u]);
}

// The same for dy.
fn load4_dy(e: u32) -> vec4<f32> {
    return vec4<f32>(dy4[e / 4u]);
}

// The units of four channels' tags (1 where poisoned).
fn units4(tag: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(1.0), pow2_4(-vec4<i32>(select(vec4<f32>(0.0), tag, finite4(tag)))), finite4(tag));
}

// 2^e (1 where poisoned): never divide by u twice, which a compiler may
// fold into u * u, flushed to 0 for e > 63 (NaN running variance, H100).
fn inv_units4(tag: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(1.0), pow2_4(vec4<i32>(select(vec4<f32>(0.0), tag, finite4(tag)))), finite4(tag));
}

// Unbiased variance from M2 in units 2^-e: one exact scaling by 2^(2e)
// where that is an f32 (e <= 63), else (sd * 2^e)^2.
fn unbiased4(m2: vec4<f32>, n: f32, tag: vec4<f32>) -> vec4<f32> {
    let e = select(vec4<f32>(0.0), tag, finite4(tag));
    let var_n1 = m2 / (n - 1.0);
    let sd = sqrt(var_n1) * inv_units4(tag);
    let small = var_n1 * pow2_4(2 * vec4<i32>(min(e, vec4<f32>(63.0))));
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
// elements (both multiples of 4: see load4), relative to `shift`. The fast pass keeps
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
