//! Random cases on contexts whose storage bindings are tiny (64 KiB and
//! odd sizes), so tensors split into chunks, some with a first row longer
//! than a binding, and data far from zero whose statistics need each
//! channel's shift.

use super::{common, run, Case};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use wgpu_batchnorm::{wgpu, BatchNorm1dConfig, GpuContext};

/// Binding sizes: 64 KiB, and two that are not powers of two.
const BINDINGS: [u64; 3] = [64 * 1024, 64 * 1024 + 256, 100_096];

/// Contexts by binding size and per-thread-partials choice.
type Contexts = Mutex<HashMap<(u64, Option<bool>), GpuContext>>;

/// One context per binding size and per-thread-partials choice, made once.
fn chunked_ctx(binding: u64, thread_partials: Option<bool>) -> Option<GpuContext> {
    static CTXS: OnceLock<Contexts> = OnceLock::new();
    common::context()?;
    let map = CTXS.get_or_init(Default::default);
    let mut map = map.lock().ok()?;
    let ctx = map.entry((binding, thread_partials)).or_insert_with(|| {
        let mut opts = common::options();
        opts.limits = Some(wgpu::Limits {
            max_storage_buffer_binding_size: binding,
            ..wgpu::Limits::default()
        });
        opts.tuning.thread_partials = thread_partials;
        GpuContext::with_options(opts).expect("context with small bindings")
    });
    Some(ctx.clone())
}

fn chunked_case() -> impl Strategy<Value = (Case, u64, Option<bool>)> {
    (
        prop_oneof![
            // First rows longer than a binding (16384 f32 values at 64 KiB).
            2 => (1usize..4, 2usize..6, 5000usize..12000).prop_map(|(n, c, l)| vec![n, c, l]),
            // Many chunks of short rows, odd C.
            1 => (300usize..2000, 1usize..40).prop_map(|(n, c)| vec![n, c]),
            1 => (20usize..200, 1usize..9, 5usize..60).prop_map(|(n, c, l)| vec![n, c, l]),
        ],
        (prop_oneof![Just(Some(0.1)), Just(None)], any::<bool>()),
        proptest::collection::vec(any::<bool>(), 1..3),
        any::<u64>(),
        prop_oneof![1 => Just(0.0), 2 => Just(1e4), 1 => Just(-3e7)],
        prop_oneof![2 => Just(0.1), 1 => Just(1.0), 1 => Just(30.0)],
        0..BINDINGS.len(),
        prop_oneof![Just(None), Just(Some(false)), Just(Some(true))],
    )
        .prop_map(
            |(shape, (momentum, affine), steps, seed, offset, sd, b, tp)| {
                let c = shape[1];
                let cfg = BatchNorm1dConfig::new(c).momentum(momentum).affine(affine);
                let case = Case {
                    shape,
                    cfg,
                    steps,
                    seed,
                    offset,
                    sd,
                };
                (case, BINDINGS[b], tp)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn chunked_gpu_matches_cpu_reference((case, binding, tp) in chunked_case()) {
        let Some(ctx) = chunked_ctx(binding, tp) else { return Ok(()) };
        if let Err(e) = run(&ctx, &case) {
            prop_assert!(false, "{e}\nbinding {binding}, thread_partials {tp:?}, case: {case:?}");
        }
    }
}
