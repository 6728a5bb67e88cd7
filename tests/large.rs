//! A tensor far larger than one storage binding (> 600 MB; lavapipe binds at
//! most 128 MiB) is normalised correctly through chunked bindings.
//! Slow on a CPU adapter: `#[ignore]`d by default, run once by `.ci/run`
//! (`cargo test --test large -- --ignored`).

mod common;

use wgpu_batchnorm::{BatchNorm1d, BatchNorm1dConfig, Tensor};

#[test]
#[ignore = "allocates ~3 GB and takes a while on a CPU adapter; run by .ci/run"]
fn normalizes_a_tensor_larger_than_600_mb() {
    let Some(ctx) = common::context() else { return };
    let (n, c, l) = (2400usize, 32usize, 2048usize);
    let numel = n * c * l;
    assert!(numel * 4 > 600_000_000);
    let max_buffer = ctx.device().limits().max_buffer_size;
    if (numel as u64) * 4 > max_buffer {
        panic!(
            "adapter cannot hold a {} byte buffer (max {max_buffer})",
            numel * 4
        );
    }
    // Channel c ~ offset_c + sd_c * noise; a cheap deterministic generator.
    let mut rng = common::Rng(0xB16);
    let mut x = vec![0f32; numel];
    for (i, v) in x.iter_mut().enumerate() {
        let ch = (i / l) % c;
        let u = rng.uniform() + rng.uniform() + rng.uniform() - 1.5; // ~ sd 0.5
        *v = (100.0 * ch as f64 - 1000.0 + (1.0 + ch as f64) * u) as f32;
    }
    // f64 reference statistics per channel (two-pass).
    let per = (n * l) as f64;
    let mut mean = vec![0f64; c];
    for (i, v) in x.iter().enumerate() {
        mean[(i / l) % c] += f64::from(*v);
    }
    mean.iter_mut().for_each(|m| *m /= per);
    let mut var = vec![0f64; c];
    for (i, v) in x.iter().enumerate() {
        let ch = (i / l) % c;
        var[ch] += (f64::from(*v) - mean[ch]).powi(2);
    }
    var.iter_mut().for_each(|v| *v /= per);

    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c)).expect("bn");
    let tx = Tensor::from_slice(&ctx, &x, &[n, c, l]).expect("upload");
    let y = bn.forward(&tx).expect("forward").to_vec().expect("read");
    let rm = bn.running_mean().expect("rm").expect("some");
    let rv = bn.running_var().expect("rv").expect("some");
    for ch in 0..c {
        let want_rm = 0.1 * mean[ch];
        let want_rv = 0.9 + 0.1 * var[ch] * per / (per - 1.0);
        assert!(
            (f64::from(rm[ch]) - want_rm).abs() < 1e-4 * (1.0 + want_rm.abs()),
            "rm[{ch}]"
        );
        assert!(
            (f64::from(rv[ch]) - want_rv).abs() < 1e-4 * want_rv,
            "rv[{ch}]"
        );
    }
    let mut worst = 0f64;
    for (i, (got, v)) in y.iter().zip(&x).enumerate() {
        let ch = (i / l) % c;
        let want = (f64::from(*v) - mean[ch]) / (var[ch] + 1e-5).sqrt();
        worst = worst.max((f64::from(*got) - want).abs());
    }
    assert!(worst < 1e-3, "max abs error {worst}");
    drop(y);

    // Eval with the running statistics over the same chunked path.
    bn.eval();
    let y = bn.forward(&tx).expect("eval").to_vec().expect("read");
    for i in (0..numel).step_by(9973) {
        let ch = (i / l) % c;
        let want = (f64::from(x[i]) - f64::from(rm[ch])) / (f64::from(rv[ch]) + 1e-5).sqrt();
        assert!(
            (f64::from(y[i]) - want).abs() < 1e-3 * (1.0 + want.abs()),
            "eval[{i}]"
        );
    }
}
