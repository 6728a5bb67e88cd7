//! Every launch strategy gives the reference's results: the column kernels
//! (few rows of many channels, or tiny inputs; forced on and off), eval
//! forwards that normalise straight from the state (their terms written
//! only when backward or a state change needs them), one-channel layouts
//! walked as rows of a power of two, elementwise slabs that lie within one
//! channel's run for long rows, and four-channel reductions over rows of
//! any C.

mod common;

use common::{
    assert_matches_reference, assert_matches_reference_in, check_close, context_with, f64s, Rng,
};
use wgpu_batchnorm::{
    cpu, BatchNorm1d, BatchNormConfig, MemoryFormat, Rank1d, Rank2d, StateDict, Tensor,
};

#[test]
fn column_kernels_match_the_reference() {
    for columns in [Some(true), Some(false), None] {
        let Some(ctx) = context_with(columns) else {
            return;
        };
        // Four channels per thread (C % 4 == 0), one per thread, tiny and
        // wide, with data far from zero (1e4 + noise).
        for (i, shape) in [
            [2usize, 4096],
            [5, 1028],
            [64, 1024],
            [3, 8],
            [3, 1027],
            [7, 513],
            [2, 5],
            [64, 3],
        ]
        .iter()
        .enumerate()
        {
            let modes = [true, true, false, true];
            assert_matches_reference(&ctx, shape, &modes, 11 + i as u64, 0.0, 1.0);
            assert_matches_reference(&ctx, shape, &modes, 23 + i as u64, 1e4, 0.1);
        }
        // One value per channel is fine in eval.
        assert_matches_reference(&ctx, &[1, 4096], &[false], 5, 0.0, 1.0);
    }
}

/// NaN poisons its channel, a constant channel of huge values gives the
/// bias, and values of both signs near f32's limit (whose difference from
/// the shift overflows, though not from the mean) or an outlier far past
/// the rest of its channel neither overflow nor spill into the other
/// channels: in every strategy, as in the reference.
/// That channel's std (1.9e38) puts invstd below f32's normal range: an
/// adapter that flushes subnormals (a GPU, not lavapipe) may give NaN for
/// the channel's outputs and gradients instead, never finite wrong values.
#[test]
fn column_kernels_keep_edge_values_to_their_channels() {
    for columns in [Some(false), Some(true)] {
        let Some(ctx) = context_with(columns) else {
            return;
        };
        let may_flush = ctx
            .adapter_info()
            .is_none_or(|i| i.device_type != wgpu_batchnorm::wgpu::DeviceType::Cpu);
        // Rows in the plain kernels' registers (6), in the arrays of 64
        // and of 256 rows (CPU adapters), and read twice (GPUs beyond 8);
        // wide rows, whose reductions sweep on CPU adapters (every lane's
        // fast pass with barriers, the careful pass of the edge lane
        // without), of C % 4 == 0 and of odd C (virtual rows, cut tail).
        let shapes = [
            vec![40usize, 1024],
            vec![300, 1028],
            vec![20, 1021],
            vec![1000, 260],
            vec![6, 8],
            vec![6, 7],
            vec![6, 3, 4],
            vec![6, 3, 5],
            vec![9, 5],
            vec![40, 8],
            vec![40, 7],
            vec![64, 12],
            vec![65, 8],
            vec![200, 7],
            vec![256, 12],
            // Four lanes per thread where the column kernels sweep up to
            // 64 rows of C % 4 == 0 past 2^16 values (CPU adapters): the
            // edge channels below lie in every lane of a thread (up to 16
            // rows in arrays of 16: `12x8196`, `16x4100`).
            vec![17, 4100],
            vec![40, 2048],
            vec![12, 8196],
            vec![16, 4100],
            // Spread reductions on CPU adapters: many channels, long
            // planes, short masked runs, masked runs of many channels.
            vec![3, 130, 16],
            vec![3, 9, 1024],
            vec![5, 6, 13],
            vec![3, 129, 21],
        ];
        for shape in shapes {
            let (n, c) = (shape[0], shape[1]);
            let l = shape.get(2).copied().unwrap_or(1);
            let numel = n * c * l;
            let mut rng = Rng(3);
            let mut x = rng.normals(numel, 0.0, 1.0);
            for (i, v) in x.iter_mut().enumerate() {
                let (r, ch) = (i / (c * l), i / l % c);
                *v = match ch {
                    0 if r == 2 => f32::NAN,
                    0 => 1.0,
                    1 => 1e21,
                    // x - shift overflows f32 where x - mean does not.
                    2 if r % 2 == 0 => 1.9e38,
                    2 => -1.9e38,
                    3 => 1e-30 * r as f32,
                    // An outlier far past the shift's scale: the fast
                    // pass's squares overflow, the careful pass takes it.
                    4 if r == n / 2 => 3e30,
                    // The same in the third and fourth lanes of a thread
                    // that takes four (channels 8.. and 12..).
                    9 => 1e21,
                    14 if r == n / 3 => -3e30,
                    _ => *v,
                };
            }
            let dy = rng.normals(numel, 0.0, 1.0);
            let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
            let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("module");
            for step in 0..3 {
                if step == 2 {
                    gpu.eval();
                    reference.eval();
                }
                let tx = Tensor::from_slice(&ctx, &x, &shape).expect("x");
                let y = gpu.forward(&tx).expect("forward").to_vec().expect("read");
                let mut want = f64s(&reference.forward(&x, &shape).expect("cpu"));
                // Channel 2's values, flushed on this adapter: NaN throughout.
                let ch2 = |i: &usize| i / l % c == 2;
                let flushed =
                    step < 2 && may_flush && (0..numel).filter(ch2).all(|i| y[i].is_nan());
                let nan_ch2 = |v: &mut [f64]| {
                    if flushed {
                        (0..numel).filter(ch2).for_each(|i| v[i] = f64::NAN);
                    }
                };
                nan_ch2(&mut want);
                let y_at = format!("{columns:?} {shape:?} step {step} y");
                check_close(&y_at, &y, &want, 2e-4).expect("y");
                let g = gpu
                    .backward(&Tensor::from_slice(&ctx, &dy, &shape).expect("dy"))
                    .expect("backward");
                let cg = reference.backward(&dy).expect("cpu backward");
                let gi = g.grad_input.to_vec().expect("read");
                let at = |what: &str| format!("{columns:?} {shape:?} step {step} {what}");
                let mut want_gi = f64s(&cg.grad_input);
                nan_ch2(&mut want_gi);
                check_close(&at("dx"), &gi, &want_gi, 1e-3).expect("dx");
                let gw = g.grad_weight.expect("affine").to_vec().expect("read");
                let mut want_gw = f64s(&cg.grad_weight.expect("affine"));
                if flushed {
                    want_gw[2] = f64::NAN;
                }
                check_close(&at("grad_weight"), &gw, &want_gw, 1e-3).expect("gw");
                let rv = gpu.running_var().expect("read").expect("tracked");
                let want_rv = f64s(&reference.running_var().expect("tracked"));
                check_close(&at("running_var"), &rv, &want_rv, 1e-5).expect("rv");
            }
        }
    }
}

/// An eval forward's backward uses the state that forward normalised with,
/// whatever changes the state in between (its terms are written before the
/// change), and the new state from then on.
#[test]
fn eval_backward_uses_the_state_of_its_forward() {
    let Some(ctx) = common::context() else {
        return;
    };
    type Change = fn(&mut BatchNorm1d, usize);
    let changes: [(&str, Change); 5] = [
        ("set_running_var", |bn, c| {
            bn.set_running_var(&vec![9.0; c]).expect("set")
        }),
        ("set_weight", |bn, c| {
            bn.set_weight(&vec![-2.0; c]).expect("set")
        }),
        ("reset_parameters", |bn, _| {
            bn.reset_parameters().expect("reset")
        }),
        ("reset_running_stats", |bn, _| {
            bn.reset_running_stats().expect("reset")
        }),
        ("load_state_dict", |bn, c| {
            let mut sd: StateDict = bn.state_dict().expect("state");
            sd.running_var = Some(vec![0.25; c]);
            sd.weight = Some(vec![3.0; c]);
            bn.load_state_dict(&sd).expect("load");
        }),
    ];
    // Rows (C % 4 == 0), planes and the general layout.
    for shape in [vec![6usize, 8], vec![3, 4, 8], vec![3, 3, 5]] {
        let c = shape[1];
        let numel: usize = shape.iter().product();
        for (name, change) in changes {
            let mut rng = Rng(17);
            let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
            let w = rng.normals(c, 1.0, 0.3);
            let rv: Vec<f32> = rng.normals(c, 2.0, 0.5).iter().map(|v| v.abs()).collect();
            bn.set_weight(&w).expect("weight");
            bn.set_running_var(&rv).expect("running var");
            bn.eval();
            let x = rng.normals(numel, 0.0, 1.0);
            let dy = rng.normals(numel, 0.0, 1.0);
            bn.forward(&Tensor::from_slice(&ctx, &x, &shape).expect("x"))
                .expect("forward");
            change(&mut bn, c);
            let g = bn
                .backward(&Tensor::from_slice(&ctx, &dy, &shape).expect("dy"))
                .expect("backward");
            let per = numel / shape[0] / c;
            let want: Vec<f64> = dy
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    let ch = i / per % c;
                    f64::from(d) * f64::from(w[ch]) / (f64::from(rv[ch]) + 1e-5).sqrt()
                })
                .collect();
            let gi = g.grad_input.to_vec().expect("read");
            check_close(&format!("{shape:?} {name}"), &gi, &want, 1e-5).expect("grad_input");
        }
    }
}

/// `(N, 1, L)` and `(N, 1)` walk their one channel as rows of a power of
/// two; odd totals keep their layout.
#[test]
fn one_channel_layouts_match_the_reference() {
    let Some(ctx) = common::context() else {
        return;
    };
    let modes = [true, false, true];
    for (i, shape) in [
        vec![12usize, 1, 7],
        vec![4, 1, 4097],
        vec![3, 1, 5],
        vec![1, 1, 64],
        vec![65536, 1],
        vec![6, 1],
    ]
    .iter()
    .enumerate()
    {
        assert_matches_reference(&ctx, shape, &modes, 40 + i as u64, 1e4, 0.1);
    }
}

/// Long rows of few channels: each elementwise invocation takes a block
/// within one channel's run of L values; for odd L, or runs not a whole
/// number of slabs (run slabs), a block of consecutive vec4s that mostly
/// lies within one run.
#[test]
fn long_rows_match_the_reference() {
    let Some(ctx) = common::context() else {
        return;
    };
    let modes = [true, false, true];
    let shapes = [
        vec![1usize, 3, 4096],
        vec![2, 5, 256],
        vec![1, 2, 96],
        vec![1, 3, 1001],
        vec![2, 5, 129],
        vec![3, 2, 4097],
        vec![5, 7, 9999],
        vec![2, 5, 132],
        vec![1, 3, 1028],
    ];
    for (i, shape) in shapes.iter().enumerate() {
        assert_matches_reference(&ctx, shape, &modes, 60 + i as u64, 0.0, 1.0);
    }
    assert_matches_reference_in::<Rank2d>(
        &ctx,
        &[1, 3, 64, 64],
        MemoryFormat::ChannelsFirst,
        &modes,
        70,
        0.0,
        1.0,
    );
    assert_matches_reference_in::<Rank1d>(
        &ctx,
        &[2, 4, 1024],
        MemoryFormat::ChannelsLast,
        &modes,
        71,
        0.0,
        1.0,
    );
}

/// With `momentum = None` the first tracked step's factor is 1: the running
/// statistics become the batch's exactly (PyTorch's `0 * old + 1 * batch`),
/// also where the batch variance is tiny next to the old value: bit for bit
/// what `momentum = 1` gives on the same adapter, and the reference's batch
/// variance to a few f32 rounding steps (WGSL's division and square root
/// are not correctly rounded: an H100 gives one ulp off the reference's f64,
/// lavapipe none).
#[test]
fn cumulative_average_takes_the_first_batch_exactly() {
    for columns in [Some(true), Some(false)] {
        let Some(ctx) = context_with(columns) else {
            return;
        };
        for shape in [vec![2usize, 6], vec![2, 8], vec![2, 3, 4]] {
            let c = shape[1];
            let numel: usize = shape.iter().product();
            let cfg = BatchNormConfig::new(c).momentum(None);
            let mut gpu = BatchNorm1d::new(&ctx, cfg.clone()).expect("module");
            let mut whole =
                BatchNorm1d::new(&ctx, cfg.clone().momentum(Some(1.0))).expect("module");
            let mut reference = cpu::BatchNorm1d::new(cfg).expect("module");
            let x: Vec<f32> = (0..numel)
                .map(|i| 1.0 + if i < numel / 2 { 0.0 } else { 1e-2 })
                .collect();
            let tx = Tensor::from_slice(&ctx, &x, &shape).expect("x");
            gpu.forward(&tx).expect("train");
            whole.forward(&tx).expect("train");
            reference.forward(&x, &shape).expect("train");
            let rv = gpu.running_var().expect("read").expect("tracked");
            let rv_whole = whole.running_var().expect("read").expect("tracked");
            assert_eq!(rv, rv_whole, "{columns:?} {shape:?}: momentum None vs 1");
            let want = reference.running_var().expect("tracked");
            for (g, w) in rv.iter().zip(&want) {
                // Blending in the old 1.0 at all (a factor below 1) would
                // move these ~3e-5 values by far more than 4 ulps.
                let rel = (f64::from(*g) - f64::from(*w)).abs() / f64::from(*w);
                assert!(
                    rel <= 4.0 * f64::from(f32::EPSILON),
                    "{columns:?} {shape:?}: {g} vs {w}"
                );
            }
            gpu.eval();
            reference.eval();
            let y = gpu.forward(&tx).expect("eval").to_vec().expect("read");
            let want = reference.forward(&x, &shape).expect("eval");
            check_close(&format!("{shape:?}"), &y, &f64s(&want), 2e-4).expect("eval output");
        }
    }
}

/// `(N, C)` with `C % 4 != 0`: four virtual channels per reduction thread
/// over rows of `lcm(C, 4)` values (aligned, whole vec4s); long enough
/// inputs take several segments, the last with the cut tail.
#[test]
fn odd_channel_rows_match_the_reference() {
    let Some(ctx) = context_with(Some(false)) else {
        return;
    };
    let modes = [true, false, true];
    for (i, shape) in [
        [1000usize, 3],
        [300, 15],
        [129, 7],
        [70, 5],
        [65, 1],
        [100, 6],
        [100_003, 3],
        [20_001, 10],
    ]
    .iter()
    .enumerate()
    {
        assert_matches_reference(&ctx, shape, &modes, 80 + i as u64, 0.0, 1.0);
        assert_matches_reference(&ctx, shape, &modes, 90 + i as u64, 1e4, 0.1);
    }
}

/// #16: the shapes at the edges of the CPU adapters' sweeps and of the
/// recorded-eval split, in every mode, with data far from zero: 16 and 17
/// rows (a training forward's column kernel sweeps from 17), 252 and 256
/// channels (rows sweep from 256), odd C past 256 (virtual rows), two
/// rows of many odd channels, one channel, and past 2^16 values against
/// just below.
#[test]
fn sweep_edges_match_the_reference() {
    for columns in [None, Some(false)] {
        let Some(ctx) = context_with(columns) else {
            return;
        };
        let modes = [true, true, false, true];
        for (i, shape) in [
            [16usize, 4100],
            [17, 4100],
            [16, 4096],
            [300, 252],
            [300, 256],
            [257, 1021],
            [2, 40_001],
            [70_000, 1],
        ]
        .iter()
        .enumerate()
        {
            assert_matches_reference(&ctx, shape, &modes, 140 + i as u64, 1e4, 0.1);
        }
    }
}
