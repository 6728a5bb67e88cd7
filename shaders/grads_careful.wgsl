// Careful gradient sums: the slow path of every gradient reduction.
//
// The reductions add dy and dy * x_hat in f32 as they come. Where a sum
// overflows f32 (dy near its limit, of either sign; or, in eval, x_hat
// itself past f32's range: x far from a running mean, a tiny running
// variance) the result is +-inf or NaN, where the reference (f64 sums,
// PyTorch's CPU kernels) may be finite, or of the other sign. A
// non-finite sum is the sign: once an f32 sum overflows it never comes
// back. The kernels that sum raise the rescue flag (rescue_flag.wgsl),
// and the rescue kernels after them walk such a channel again here (or
// the column kernels of small tensors at once: INLINE_RESCUE), one
// invocation per channel (`careful_channel`, a few hundred rows) or per
// channel and window of its values (`careful_window`), adding each term as a fraction
// and a power-of-two exponent: a term dy * ((x - shift) - mean) * invstd is the
// product of the three factors' `frexp` fractions at the sum of their
// exponents, so no product overflows either; the running sum keeps the
// largest exponent seen (`top`) and holds terms in units of
// 2^(top - CAREFUL_HEADROOM), so 2^32 terms stay below 2^126. Non-finite
// terms (NaN or infinite inputs) are added as they are: NaN, or the
// infinities' sign, as in f64. The totals come back to f32 once, at the
// end (+-inf only where the exact total is past f32's range), and the
// means (sum / n, for grad_input) are taken before that, so they stay
// finite wherever they are.
//
// The walk covers the dispatch's window of the tensor (P().n rows from
// P().lead, P().numel values: one chunk, or the whole tensor), reading
// single values (x_at, dy_at); grads_rescue walks it in windows of
// P().rescue_window values of a channel (careful_window), one invocation
// each, and grads_rescue_merge (rescue.wgsl) adds them up in order.

// Terms are at most 2^CAREFUL_HEADROOM in a sum's units.
const CAREFUL_HEADROOM: i32 = 94;

// (s + comp) * 2^(top - CAREFUL_HEADROOM), comp the rounding errors of
// the additions so far (Neumaier's compensated sum: exact cancellations of
// huge terms come out exact); top = -1000: no finite term yet.
struct Careful {
    s: f32,
    comp: f32,
    top: i32,
}

// The two sums of a channel: dy and dy * x_hat.
struct CarefulPair {
    dy: Careful,
    dyx: Careful,
}

fn careful_empty() -> CarefulPair {
    return CarefulPair(Careful(0.0, 0.0, -1000), Careful(0.0, 0.0, -1000));
}

// v * 2^k for any integer k: +-inf past f32's range, +-0 (or subnormal)
// below it; 0, infinities and NaN as they are. One ldexp within f32's
// range (ldexp is undefined past it), no chain of factors (which GL
// drivers may reassociate: inf * (2^-126 * 2^-126) made NaN there).
fn scale2(v: f32, k: i32) -> f32 {
    if (v == 0.0 || !is_finite(v)) {
        return v;
    }
    let p = frexp_exact(v);
    let e = p.exp + k;
    if (e > 128) {
        return select(bitcast<f32>(0xff800000u), bitcast<f32>(0x7f800000u), v > 0.0);
    }
    if (e < -149) {
        return v * 0.0;
    }
    // 2 * fract in [1, 2) at e - 1 <= 127: HLSL's ldexp is x * exp2(e),
    // and exp2(128) is inf.
    return ldexp(2.0 * p.fract, e - 1);
}

// frexp for subnormal values too (WGSL leaves them undefined; Mesa's
// lowering reads the exponent bits as they are): scaled by 2^64 first.
// (Zero stays zero; infinities and NaN are the callers' to skip.)
struct Frexp {
    fract: f32,
    exp: i32,
}

fn frexp_exact(v: f32) -> Frexp {
    if ((bitcast<u32>(v) & 0x7f800000u) == 0u && v != 0.0) {
        let p = frexp(v * 18446744073709551616.0);
        return Frexp(p.fract, p.exp - 64);
    }
    let p = frexp(v);
    return Frexp(p.fract, p.exp);
}

// s + v with its rounding error added to comp (Neumaier).
fn careful_plus(s: f32, comp: f32, v: f32, top: i32) -> Careful {
    let t = s + v;
    var err = (v - t) + s;
    if (abs(s) >= abs(v)) {
        err = (s - t) + v;
    }
    // Non-finite sums carry no error term (inf - inf would be NaN).
    return Careful(t, select(comp, comp + err, is_finite(t)), top);
}

// Adds the term f * 2^e (|f| < 1, finite), or a non-finite f as it is.
fn careful_add(c: Careful, f: f32, e: i32) -> Careful {
    if (!is_finite(f)) {
        return Careful(c.s + f, c.comp, c.top);
    }
    if (f == 0.0) {
        return c;
    }
    if (e > c.top) {
        let k = c.top - e;
        return careful_plus(scale2(c.s, k), scale2(c.comp, k), f * pow2(CAREFUL_HEADROOM), e);
    }
    return careful_plus(c.s, c.comp, scale2(f, e - c.top + CAREFUL_HEADROOM), c.top);
}

fn careful_merge(a: Careful, b: Careful) -> Careful {
    let top = max(a.top, b.top);
    let ka = a.top - top;
    let kb = b.top - top;
    return careful_plus(scale2(a.s, ka), scale2(a.comp, ka) + scale2(b.comp, kb), scale2(b.s, kb), top);
}

fn careful_merge_pair(a: CarefulPair, b: CarefulPair) -> CarefulPair {
    return CarefulPair(careful_merge(a.dy, b.dy), careful_merge(a.dyx, b.dyx));
}

// The sum as an f32 (+-inf past its range).
fn careful_value(c: Careful) -> f32 {
    return scale2(careful_total(c), c.top - CAREFUL_HEADROOM);
}

// The sum over n.
fn careful_mean(c: Careful, n: f32) -> f32 {
    return scale2(careful_total(c) / n, c.top - CAREFUL_HEADROOM);
}

fn careful_total(c: Careful) -> f32 {
    return select(c.s, c.s + c.comp, is_finite(c.s));
}

// A sum as one vec4 (s, comp, top), to carry it between chunks.
fn careful_pack(c: Careful) -> vec4<f32> {
    return vec4<f32>(c.s, c.comp, f32(c.top), 0.0);
}

fn careful_unpack(v: vec4<f32>) -> Careful {
    return Careful(v.x, v.y, i32(v.z));
}

// Adds the value pair (x, g = dy) of a channel whose saved terms are
// a = (shift, mean - shift, invstd): dy, and dy * x_hat with
// x_hat = ((x - shift) - mean) * invstd taken as
// 2 * (x / 2 - shift / 2 - mean / 2) * invstd (no overflow for any
// finite x and terms).
fn careful_step(acc: CarefulPair, x: f32, g: f32, a: vec3<f32>) -> CarefulPair {
    let fg = frexp_exact(g);
    var dy = acc.dy;
    if (is_finite(g)) {
        dy = careful_add(dy, fg.fract, fg.exp);
    } else {
        dy = careful_add(dy, g, 0);
    }
    let half = (x * 0.5 - a.x * 0.5) - a.y * 0.5;
    var dyx = acc.dyx;
    if (is_finite(half) && is_finite(a.z)) {
        let fd = frexp_exact(half);
        let fi = frexp_exact(a.z);
        if (is_finite(g)) {
            dyx = careful_add(dyx, fg.fract * fd.fract * fi.fract, fg.exp + fd.exp + fi.exp + 1);
        } else {
            // +-inf times x_hat's sign, NaN where x_hat is 0 (as in f64).
            dyx = careful_add(dyx, g * (fd.fract * fi.fract), 0);
        }
    } else {
        dyx = careful_add(dyx, g * x_hat4(vec4<f32>(x), vec4<f32>(a.x), vec4<f32>(a.y), vec4<f32>(a.z)).x, 0);
    }
    return CarefulPair(dy, dyx);
}

// Channel ch's careful sums over the dispatch's window: its values
// (r * C + ch) * L + l of the rows the window overlaps, within
// [lead, lead + numel) of them (each run clamped to the window, so a long
// row cut into many chunks is walked once in all). Both sums NaN: done.
// For at most a few hundred values per channel (the column kernels' rows);
// longer walks go by windows (careful_window).
fn careful_channel(ch: u32, a: vec3<f32>) -> CarefulPair {
    var acc = careful_empty();
    for (var r = 0u; r < P().n; r += 1u) {
        acc = careful_run(acc, ch, a, r, vec2<u32>(0u, P().l));
        if (is_nan(acc.dy.s) && is_nan(acc.dyx.s)) {
            break;
        }
    }
    return acc;
}

// Window w of channel ch's careful walk in grads_rescue: P().rescue_window
// of the channel's values inside the dispatch's window, in order, run after
// run across rows (ExecPlan::rescue_split on the host counts the windows
// over min(N * L, numel) values). Mesa's llvmpipe (lavapipe, and
// llvmpipe's GL) ends every loop of an invocation once the invocation has
// run 65535 loop iterations in all, silently: a walk of a whole chunk by
// one thread per channel stopped after 21845 rows. A window takes about
// three loop iterations per value at most (a run of one value costs its
// inner loop two).
fn careful_window(ch: u32, w: u32, a: vec3<f32>) -> CarefulPair {
    let l = P().l;
    let e = P().rescue_window;
    // The channel's values as ordinals r * L + j over the rows the window
    // overlaps, from the first inside it (the first row's run may start
    // before the window: P().lead).
    let base = ch * l;
    let k_lo = select(0u, min(P().lead - base, l), P().lead > base);
    let k0 = k_lo + w * e;
    let k1 = k0 + e;
    let r1 = min(P().n, (k1 + l - 1u) / l);
    var acc = careful_empty();
    for (var r = k0 / l; r < r1; r += 1u) {
        let lo = max(k0, r * l) - r * l;
        let hi = min(k1, r * l + l) - r * l;
        acc = careful_run(acc, ch, a, r, vec2<u32>(lo, hi));
        if (is_nan(acc.dy.s) && is_nan(acc.dyx.s)) {
            break;
        }
    }
    return acc;
}

// acc plus channel ch's values [run.x, run.y) of row r's run (offsets from
// the run's start), within the dispatch's window [lead, lead + numel).
fn careful_run(acc0: CarefulPair, ch: u32, a: vec3<f32>, r: u32, run: vec2<u32>) -> CarefulPair {
    var acc = acc0;
    let base = r * P().c * P().l + ch * P().l;
    let first = max(base + run.x, P().lead);
    let last = min(base + run.y, P().lead + P().numel);
    for (var g = first; g < last; g += 1u) {
        let e = g - P().lead;
        acc = careful_step(acc, x_at(e), dy_at(e), a);
    }
    return acc;
}

// Bit test, as is_finite.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// A channel's totals: the sums (grad_bias, grad_weight) and their means
// over the batch (for grad_input).
struct GradTotals {
    sdy: f32,
    sdyx: f32,
    mdy: f32,
    mdyx: f32,
}

// The totals of finite sums st = (sum dy, sum dy * x_hat).
fn plain_totals(st: vec2<f32>) -> GradTotals {
    let n = f32(P().count);
    return GradTotals(st.x, st.y, st.x / n, st.y / n);
}

fn careful_totals(p: CarefulPair) -> GradTotals {
    let n = f32(P().count);
    return GradTotals(careful_value(p.dy), careful_value(p.dyx), careful_mean(p.dy, n), careful_mean(p.dyx, n));
}

// The totals of channel ch from its fast sums st = (sum dy, sum dy * x_hat)
// over the whole tensor (one window), walking it again where they are not
// finite (the column kernels of small tensors, INLINE_RESCUE).
fn grad_totals1(ch: u32, a: vec3<f32>, st: vec2<f32>) -> GradTotals {
    if (is_finite(st.x) && is_finite(st.y)) {
        return plain_totals(st);
    }
    return careful_totals(careful_channel(ch, a));
}

// Four channels' totals (lane q: channels 4q .. 4q + 3, those below C).
struct GradTotals4 {
    sdy: vec4<f32>,
    sdyx: vec4<f32>,
    mdy: vec4<f32>,
    mdyx: vec4<f32>,
}

// The totals of finite sums, four channels (as plain_totals).
fn plain_totals4(sdy: vec4<f32>, sdyx: vec4<f32>) -> GradTotals4 {
    let n = f32(P().count);
    return GradTotals4(sdy, sdyx, sdy / n, sdyx / n);
}

// (In the column kernels of small tensors only, INLINE_RESCUE: the slow
// path's code is not free where it is not taken; lavapipe runs part of it
// masked, about 25% of the column backward of 2 to 4 rows of millions of
// channels, where a lane's own work is smallest.)
fn grad_totals4(q: u32, sdy: vec4<f32>, sdyx: vec4<f32>, shift: vec4<f32>, mean: vec4<f32>, invstd: vec4<f32>) -> GradTotals4 {
    var t = plain_totals4(sdy, sdyx);
    let ok = finite4(sdy) & finite4(sdyx);
    if (all(ok)) {
        return t;
    }
    // Components picked and replaced without dynamic vector indexing,
    // which compilers may lower to memory.
    let bad = select(vec4<f32>(1.0), vec4<f32>(0.0), ok);
    for (var k = 0u; k < 4u; k += 1u) {
        let ch = 4u * q + k;
        if (pick(bad, k) == 0.0 || ch >= P().c) {
            continue;
        }
        let a = vec3<f32>(pick(shift, k), pick(mean, k), pick(invstd, k));
        let c = careful_totals(careful_channel(ch, a));
        let at = vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(k);
        t = GradTotals4(
            select(t.sdy, vec4<f32>(c.sdy), at),
            select(t.sdyx, vec4<f32>(c.sdyx), at),
            select(t.mdy, vec4<f32>(c.mdy), at),
            select(t.mdyx, vec4<f32>(c.mdyx), at),
        );
    }
    return t;
}
