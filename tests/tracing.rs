//! `tracing` spans and events for context creation, pipeline compilation
//! and each op (the `tracing` feature). Its own test binary: tracing caches
//! each call site's interest process-wide, so call sites first reached by
//! other tests' threads (with no subscriber) would hide events from the
//! thread-local subscriber here.
#![cfg(feature = "tracing")]

mod common;

use std::sync::{Arc, Mutex};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use wgpu_batchnorm::{BatchNorm1d, BatchNormConfig, Tensor};

/// Records the names of the spans and events it sees.
#[derive(Clone, Default)]
struct Names(Arc<Mutex<Vec<String>>>);

impl Subscriber for Names {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut v = self.0.lock().expect("lock");
        v.push(format!("span {}", span.metadata().name()));
        Id::from_u64(v.len() as u64)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut name = String::new();
        struct Msg<'a>(&'a mut String);
        impl tracing::field::Visit for Msg<'_> {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    *self.0 = format!("{v:?}");
                }
            }
        }
        e.record(&mut Msg(&mut name));
        self.0.lock().expect("lock").push(format!("event {name}"));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Context creation, pipeline compilation and each op show up.
#[test]
fn tracing_spans_cover_context_compilation_and_ops() {
    let names = Names::default();
    let seen = names.0.clone();
    tracing::subscriber::with_default(names, || {
        let Some(ctx) = common::context() else { return };
        let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
        let x = Tensor::from_slice(&ctx, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).expect("x");
        bn.forward(&x).expect("forward");
        bn.backward(&x).expect("backward");
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu_batchnorm::wgpu::CommandEncoderDescriptor::default());
        bn.encode_backward(&mut enc, &x).expect("encode backward");
        ctx.queue().submit([enc.finish()]);
        x.to_vec().expect("read");
        bn.eval();
        bn.fold_into_linear(&[1.0; 3], None, 1).expect("fold");
    });
    let seen = seen.lock().expect("lock").clone();
    for want in [
        "span GpuContext::new",
        "span compile pipeline",
        "span BatchNorm::forward",
        "span BatchNorm::backward",
        "span BatchNorm::encode_backward",
        "span Tensor::to_vec",
        "span BatchNorm::fold",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:?}");
    }
}
