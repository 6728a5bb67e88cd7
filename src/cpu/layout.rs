//! Per-channel walks over a stored `(N, C, L)` layout without indexing:
//! the data is a sequence of runs of `L` values, run `r` belonging to
//! channel `r % C`.

use crate::semantics::Layout;

pub(super) fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub(super) fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// The runs of `data` with their channels.
fn runs<'a>(lay: &Layout, data: &'a [f64]) -> impl Iterator<Item = (usize, &'a [f64])> {
    let (c, l) = (lay.c.max(1), lay.l.max(1));
    data.chunks_exact(l)
        .enumerate()
        .map(move |(r, run)| (r % c, run))
}

/// Per-channel `sum(f(channel, value))`, in storage order.
pub(super) fn channel_sums(lay: &Layout, data: &[f64], f: impl Fn(usize, f64) -> f64) -> Vec<f64> {
    let mut sums = vec![0.0; lay.c];
    for (ch, run) in runs(lay, data) {
        if let Some(acc) = sums.get_mut(ch) {
            *acc += run.iter().map(|&v| f(ch, v)).sum::<f64>();
        }
    }
    sums
}

/// `f(channel, value)` for every value, in storage order.
pub(super) fn map_channels(lay: &Layout, data: &[f64], f: impl Fn(usize, f64) -> f64) -> Vec<f64> {
    runs(lay, data)
        .flat_map(|(ch, run)| run.iter().map(move |&v| (ch, v)))
        .map(|(ch, v)| f(ch, v))
        .collect()
}

/// `f(channel, a, b)` for every pair of values of two tensors of `lay`.
pub(super) fn map_channels2(
    lay: &Layout,
    a: &[f64],
    b: &[f64],
    f: impl Fn(usize, f64, f64) -> f64,
) -> Vec<f64> {
    runs(lay, a)
        .zip(b.chunks_exact(lay.l.max(1)))
        .flat_map(|((ch, ra), rb)| ra.iter().zip(rb).map(move |(&x, &y)| (ch, x, y)))
        .map(|(ch, x, y)| f(ch, x, y))
        .collect()
}
