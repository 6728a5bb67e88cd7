//! Random cases over every rank, both memory formats and the fused
//! epilogue, against the CPU reference.

use super::{common, ctx};
use proptest::prelude::*;
use wgpu_batchnorm::{
    cpu, Activation, BatchNorm, BatchNorm1dConfig, Epilogue, GpuContext, MemoryFormat, Rank1d,
    Rank2d, Rank3d, SpatialRank, Tensor,
};

/// One random case over every rank, both memory formats and the fused
/// epilogue.
#[derive(Debug, Clone)]
struct NdCase {
    shape: Vec<usize>,
    format: MemoryFormat,
    relu: bool,
    residual: bool,
    cfg: BatchNorm1dConfig,
    steps: Vec<bool>,
    seed: u64,
}

fn nd_case() -> impl Strategy<Value = NdCase> {
    let dims = prop_oneof![
        (0usize..24, 1usize..9).prop_map(|(n, c)| vec![n, c]),
        (0usize..8, 1usize..7, 1usize..9).prop_map(|(n, c, l)| vec![n, c, l]),
        (0usize..5, 1usize..9, 1usize..5, 1usize..6).prop_map(|(n, c, h, w)| vec![n, c, h, w]),
        (0usize..4, 1usize..5, 1usize..3, 1usize..4, 1usize..4)
            .prop_map(|(n, c, d, h, w)| vec![n, c, d, h, w]),
    ];
    (
        dims,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(Some(0.1)), Just(None)],
        ),
        proptest::collection::vec(any::<bool>(), 1..4),
        any::<u64>(),
    )
        .prop_map(
            |(shape, cl, relu, residual, (affine, track, momentum), steps, seed)| {
                let c = shape[1];
                NdCase {
                    shape,
                    format: if cl {
                        MemoryFormat::ChannelsLast
                    } else {
                        MemoryFormat::ChannelsFirst
                    },
                    relu,
                    residual,
                    cfg: BatchNorm1dConfig::new(c)
                        .affine(affine)
                        .track_running_stats(track)
                        .momentum(momentum),
                    steps,
                    seed,
                }
            },
        )
}

fn run_nd<R: SpatialRank>(ctx: &GpuContext, case: &NdCase) -> Result<(), String> {
    let e = |e: wgpu_batchnorm::Error| e.to_string();
    let mut gpu = BatchNorm::<R>::new(ctx, case.cfg.clone()).map_err(e)?;
    let mut cpu = cpu::BatchNorm::<R>::new(case.cfg.clone()).map_err(e)?;
    let mut rng = common::Rng(case.seed | 1);
    let numel: usize = case.shape.iter().product();
    let (shape, format) = (&case.shape, case.format);
    let f = common::f64s;
    for (i, &train) in case.steps.iter().enumerate() {
        if train {
            gpu.train();
            cpu.train();
        } else {
            gpu.eval();
            cpu.eval();
        }
        let (x, r, dy) = (
            rng.normals(numel, 0.5, 2.0),
            rng.normals(numel, 0.0, 1.0),
            rng.normals(numel, 0.0, 1.0),
        );
        let t = |v: &[f32]| Tensor::from_slice_with_format(ctx, v, shape, format).map_err(e);
        let tr = t(&r)?;
        let epilogue = Epilogue {
            residual: case.residual.then_some(&tr),
            activation: if case.relu {
                Activation::Relu
            } else {
                Activation::Identity
            },
        };
        let residual = case.residual.then_some(r.as_slice());
        let at = |w: &str| format!("step {i} {w}");
        match (
            gpu.forward_fused(&t(&x)?, epilogue),
            cpu.forward_fused(&x, shape, format, residual, case.relu),
        ) {
            (Ok(y), Ok(want)) => {
                common::check_close(&at("output"), &y.to_vec().map_err(e)?, &f(&want), 2e-4)?;
                let g = gpu.backward(&t(&dy)?).map_err(e)?;
                let w = cpu.backward(&dy).map_err(e)?;
                let gi = g.grad_input.to_vec().map_err(e)?;
                common::check_close(&at("grad_input"), &gi, &f(&w.grad_input), 1e-3)?;
                for (name, a, b) in [
                    ("grad_weight", g.grad_weight, w.grad_weight),
                    ("grad_residual", g.grad_residual, w.grad_residual),
                ] {
                    match (a, b) {
                        (Some(a), Some(b)) => {
                            let a = a.to_vec().map_err(e)?;
                            common::check_close(&at(name), &a, &f(&b), 1e-3)?;
                        }
                        (None, None) => {}
                        _ => return Err(at(&format!("{name} presence differs"))),
                    }
                }
            }
            (Err(a), Err(b)) if a.to_string() == b.to_string() => {}
            (a, b) => return Err(at(&format!("gpu {:?} vs cpu {:?}", a.err(), b.err()))),
        }
        if gpu.num_batches_tracked() != cpu.num_batches_tracked() {
            return Err(at("num_batches_tracked differs"));
        }
        match (gpu.running_var().map_err(e)?, cpu.running_var()) {
            (Some(a), Some(b)) => common::check_close(&at("running_var"), &a, &f(&b), 1e-4)?,
            (None, None) => {}
            _ => return Err(at("running_var presence differs")),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every rank, both memory formats, with and without the fused
    /// residual add and ReLU: the GPU agrees with the CPU reference.
    #[test]
    fn nd_formats_and_epilogues_match_reference(case in nd_case()) {
        let Some(ctx) = ctx() else { return Ok(()) };
        let r = match case.shape.len() {
            2 | 3 => run_nd::<Rank1d>(ctx, &case),
            4 => run_nd::<Rank2d>(ctx, &case),
            _ => run_nd::<Rank3d>(ctx, &case),
        };
        if let Err(e) = r {
            prop_assert!(false, "{e}\ncase: {case:?}");
        }
    }
}
