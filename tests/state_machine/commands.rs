//! The commands of the model-based test and their proptest strategies.

use proptest::prelude::*;
use wgpu_batchnorm::BatchNormConfig;

/// How a tensor argument is broken, if at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bad {
    None,
    /// Made on another context.
    Foreign,
    /// An application buffer with only STORAGE usage and no padding.
    StorageOnly,
    /// An f16 tensor where the call needs f32.
    WrongDtype,
}

#[derive(Debug, Clone)]
pub enum Cmd {
    Train,
    Eval,
    /// Forward of an input of `shape` (possibly of a wrong rank or channel
    /// count, or empty).
    Forward {
        shape: Vec<usize>,
        cl: bool,
        seed: u64,
        bad: Bad,
    },
    /// `forward_into` with an output of the right or a wrong shape, or the
    /// input itself.
    ForwardInto {
        shape: Vec<usize>,
        seed: u64,
        out: u8,
    },
    /// `encode_forward` into an app encoder, then submit.
    EncodeForward {
        shape: Vec<usize>,
        seed: u64,
    },
    /// Backward with a right or wrong grad_output.
    Backward {
        seed: u64,
        wrong_shape: bool,
        bad: Bad,
    },
    /// One-shard SyncBatchNorm: shard_moments, forward_with_moments, and
    /// (if `backward`) shard_grad_sums + backward_with_sums.
    Shard {
        shape: Vec<usize>,
        seed: u64,
        malformed: bool,
        backward: bool,
    },
    SetParam {
        which: u8,
        extra: bool,
        seed: u64,
    },
    LoadStateDict {
        wrong: u8,
        seed: u64,
    },
    SetNbt(u64),
    /// `encode_backward` into an app encoder, then submit.
    EncodeBackward {
        seed: u64,
    },
    ResetRunningStats,
    ResetParameters,
}

fn shape_for(rank: usize, c: usize) -> BoxedStrategy<Vec<usize>> {
    let n = prop_oneof![4 => 2usize..9, 1 => Just(1usize), 1 => Just(0usize)];
    let ch = prop_oneof![6 => Just(c), 1 => Just(c + 1)];
    let spatial = 1usize..4;
    match rank {
        1 => prop_oneof![
            (n.clone(), ch.clone()).prop_map(|(n, c)| vec![n, c]),
            (n.clone(), ch.clone(), 1usize..6).prop_map(|(n, c, l)| vec![n, c, l]),
            Just(vec![4]),
        ]
        .boxed(),
        2 => prop_oneof![
            5 => (n.clone(), ch.clone(), spatial.clone(), spatial.clone())
                .prop_map(|(n, c, h, w)| vec![n, c, h, w]),
            1 => (n.clone(), ch.clone()).prop_map(|(n, c)| vec![n, c, 2]),
        ]
        .boxed(),
        _ => prop_oneof![
            5 => (n, ch.clone(), spatial.clone(), spatial.clone(), spatial)
                .prop_map(|(n, c, d, h, w)| vec![n, c, d, h, w]),
            1 => ch.prop_map(|c| vec![2, c, 2, 2]),
        ]
        .boxed(),
    }
}

fn bad() -> impl Strategy<Value = Bad> {
    prop_oneof![
        12 => Just(Bad::None),
        1 => Just(Bad::Foreign),
        1 => Just(Bad::StorageOnly),
        1 => Just(Bad::WrongDtype),
    ]
}

fn cmd(rank: usize, c: usize) -> BoxedStrategy<Cmd> {
    let shape = shape_for(rank, c);
    prop_oneof![
        2 => Just(Cmd::Train),
        1 => Just(Cmd::Eval),
        6 => (shape.clone(), any::<bool>(), any::<u64>(), bad())
            .prop_map(|(shape, cl, seed, bad)| Cmd::Forward { shape, cl, seed, bad }),
        2 => (shape.clone(), any::<u64>(), 0u8..4)
            .prop_map(|(shape, seed, out)| Cmd::ForwardInto { shape, seed, out }),
        1 => (shape.clone(), any::<u64>()).prop_map(|(shape, seed)| Cmd::EncodeForward { shape, seed }),
        4 => (any::<u64>(), prop::bool::weighted(0.15), bad())
            .prop_map(|(seed, wrong_shape, bad)| Cmd::Backward { seed, wrong_shape, bad }),
        2 => (shape, any::<u64>(), prop::bool::weighted(0.2), any::<bool>())
            .prop_map(|(shape, seed, malformed, backward)| Cmd::Shard { shape, seed, malformed, backward }),
        2 => (0u8..4, prop::bool::weighted(0.2), any::<u64>())
            .prop_map(|(which, extra, seed)| Cmd::SetParam { which, extra, seed }),
        1 => (0u8..4, any::<u64>()).prop_map(|(wrong, seed)| Cmd::LoadStateDict { wrong, seed }),
        1 => prop_oneof![0u64..5, Just(u64::MAX - 1), Just(u64::MAX)].prop_map(Cmd::SetNbt),
        1 => any::<u64>().prop_map(|seed| Cmd::EncodeBackward { seed }),
        1 => Just(Cmd::ResetRunningStats),
        1 => Just(Cmd::ResetParameters),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
pub struct Case {
    pub rank: usize,
    pub cfg: BatchNormConfig,
    pub cmds: Vec<Cmd>,
    /// Run on the context without the column kernels.
    pub split: bool,
}

pub fn case() -> impl Strategy<Value = Case> {
    (
        1usize..4,
        1usize..5,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(Some(0.1)), Just(None)],
        any::<bool>(),
    )
        .prop_flat_map(|(rank, c, affine, track, momentum, split)| {
            let cfg = BatchNormConfig::new(c)
                .affine(affine)
                .track_running_stats(track)
                .momentum(momentum);
            proptest::collection::vec(cmd(rank, c), 1..12).prop_map(move |cmds| Case {
                rank,
                cfg: cfg.clone(),
                cmds,
                split,
            })
        })
}
