//! Model-based test: random sequences of calls — valid and invalid — on a
//! GPU module of every rank, against the CPU reference as the model.
//!
//! After every command the module's observable state (weight, bias,
//! running statistics, num_batches_tracked, and what a backward of its last
//! forward returns) must equal the model's, every call the model rejects
//! must be an `Err` that changes nothing, and no call may panic.
//! `BN_STATE_MACHINE_CASES` sets the number of sequences (default 500).

#[path = "state_machine/commands.rs"]
mod commands;
mod common;
#[path = "state_machine/state_cmds.rs"]
mod state_cmds;

use std::sync::OnceLock;

use commands::{case, Bad, Case, Cmd};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use state_cmds::compare_grads;
use wgpu_batchnorm::{
    cpu, wgpu, BatchNorm, Error, GpuContext, MemoryFormat, Rank1d, Rank2d, Rank3d, SpatialRank,
    Tensor,
};

/// The test's contexts: the default one, another (for "foreign" tensors),
/// and one whose `(N, C)` inputs always take the split reductions (small
/// inputs otherwise take the column kernels), unless `BN_COLUMNS` forces a
/// choice for the whole run.
fn contexts() -> Option<&'static (GpuContext, GpuContext, GpuContext)> {
    static CTX: OnceLock<Option<(GpuContext, GpuContext, GpuContext)>> = OnceLock::new();
    CTX.get_or_init(|| {
        let a = common::context()?;
        let b = GpuContext::with_options(common::options()).expect("second context");
        let mut split = common::options();
        if std::env::var("BN_COLUMNS").is_err() {
            split.tuning.columns = Some(false);
        }
        let split = GpuContext::with_options(split).expect("split context");
        Some((a, b, split))
    })
    .as_ref()
}

/// The GPU module and its model, with what the harness knows about the
/// last forward.
struct Pair<'a, R: SpatialRank> {
    ctx: &'a GpuContext,
    foreign: &'a GpuContext,
    gpu: BatchNorm<R>,
    model: cpu::BatchNorm<R>,
    /// The last successful forward: input shape and format, and whether it
    /// used statistics from `forward_with_moments`.
    last: Option<(Vec<usize>, MemoryFormat, bool)>,
    /// The last successful forward was of an f16 input (the model saw its
    /// values, zeros, as f32): its backward needs an f16 grad_output.
    f16_last: bool,
}

/// A dtype other than f32 (f32 itself without the `f16` feature, which
/// then makes the "wrong dtype" calls valid ones).
fn wrong_dtype() -> wgpu_batchnorm::DType {
    #[cfg(feature = "f16")]
    return wgpu_batchnorm::DType::F16;
    #[cfg(not(feature = "f16"))]
    return wgpu_batchnorm::DType::F32;
}

fn data(seed: u64, n: usize) -> Vec<f32> {
    common::Rng(seed | 1).normals(n, 0.5, 2.0)
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

impl<R: SpatialRank> Pair<'_, R> {
    fn tensor(&self, d: &[f32], shape: &[usize], format: MemoryFormat, bad: Bad) -> Res<Tensor> {
        match bad {
            Bad::None => Tensor::from_slice_with_format(self.ctx, d, shape, format).map_err(err),
            Bad::Foreign => {
                Tensor::from_slice_with_format(self.foreign, d, shape, format).map_err(err)
            }
            Bad::WrongDtype => {
                Tensor::zeros_with(self.ctx, shape, wrong_dtype(), format).map_err(err)
            }
            Bad::StorageOnly => {
                // Exactly the data's bytes: unpadded unless numel % 4 == 0.
                let buffer = self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("state-machine/storage-only"),
                    size: (d.len() as u64 * 4).max(4),
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: true,
                });
                if !d.is_empty() {
                    buffer
                        .slice(..)
                        .get_mapped_range_mut()
                        .map_err(err)?
                        .copy_from_slice(bytemuck::cast_slice(d));
                }
                buffer.unmap();
                let t = Tensor::from_buffer(self.ctx, buffer, 0, shape).map_err(err)?;
                Ok(t.with_memory_format(format))
            }
        }
    }

    fn apply(&mut self, cmd: &Cmd) -> Res<()> {
        match cmd {
            Cmd::Train => {
                self.gpu.train();
                self.model.train();
            }
            Cmd::Eval => {
                self.gpu.eval();
                self.model.eval();
            }
            Cmd::Forward {
                shape,
                cl,
                seed,
                bad,
            } => {
                let format = if *cl {
                    MemoryFormat::ChannelsLast
                } else {
                    MemoryFormat::ChannelsFirst
                };
                let numel: usize = shape.iter().product();
                let x = self.tensor(&data(*seed, numel), shape, format, *bad)?;
                // A storage-only buffer works when it needs no padded copy.
                // An f16 input (zeros) is valid where the adapter runs f16
                // kernels: the model then sees zeros; elsewhere an error
                // that changes nothing.
                if *bad == Bad::WrongDtype && x.dtype() != wgpu_batchnorm::DType::F32 {
                    let zeros = vec![0.0; numel];
                    let mut probe = self.model.clone();
                    let model = probe.forward_with_format(&zeros, shape, format);
                    return match (self.gpu.forward(&x), model) {
                        (Ok(y), Ok(want)) => {
                            self.model = probe;
                            let y = y.to_vec().map_err(err)?;
                            common::check_close("f16 output", &y, &common::f64s(&want), 1e-3)?;
                            self.last = Some((shape.clone(), format, true));
                            self.f16_last = true;
                            Ok(())
                        }
                        (Err(Error::Unsupported(_)), _) | (Err(_), Err(_)) => Ok(()),
                        (g, m) => Err(format!(
                            "f16 forward: gpu {:?} model {:?}",
                            g.err(),
                            m.err()
                        )),
                    };
                }
                let ok = *bad == Bad::None || (*bad == Bad::StorageOnly && numel.is_multiple_of(4));
                let before = self.model.clone();
                let model_ok = self
                    .model
                    .clone()
                    .forward_with_format(&data(*seed, numel), shape, format)
                    .is_ok();
                let r = self.gpu.forward(&x);
                match (&r, model_ok && ok) {
                    (Ok(y), true) => {
                        let want = self
                            .model
                            .forward_with_format(&data(*seed, numel), shape, format)
                            .map_err(err)?;
                        // A storage-only tensor cannot be read back; its output can.
                        let y = y.to_vec().map_err(err)?;
                        common::check_close("forward output", &y, &common::f64s(&want), 2e-4)?;
                        self.last = Some((shape.clone(), format, false));
                        self.f16_last = false;
                    }
                    (Err(_), false) => {
                        self.model = before;
                    }
                    (r, expected) => {
                        return Err(format!(
                            "forward {shape:?} {bad:?}: gpu {:?}, expected ok={expected}",
                            r.as_ref().err()
                        ));
                    }
                }
            }
            Cmd::ForwardInto { shape, seed, out } => {
                let numel: usize = shape.iter().product();
                let x = self.tensor(
                    &data(*seed, numel),
                    shape,
                    MemoryFormat::ChannelsFirst,
                    Bad::None,
                )?;
                let target = match out {
                    0 => Tensor::zeros(self.ctx, shape).map_err(err)?,
                    1 => Tensor::zeros(self.ctx, &[numel + 1]).map_err(err)?,
                    2 => x.clone(),
                    _ => Tensor::zeros_of(self.ctx, shape, wrong_dtype()).map_err(err)?,
                };
                let gpu_ok = *out == 0
                    || (*out == 2 && numel == 0)
                    || (*out == 3 && wrong_dtype() == wgpu_batchnorm::DType::F32);
                let d = data(*seed, numel);
                let mut probe = self.model.clone();
                let model_ok = probe.forward(&d, shape).is_ok();
                let r = self.gpu.forward_into(&x, &target);
                match (r, model_ok && gpu_ok) {
                    (Ok(()), true) => {
                        let want = self.model.forward(&d, shape).map_err(err)?;
                        let y = target.to_vec().map_err(err)?;
                        common::check_close("forward_into output", &y, &common::f64s(&want), 2e-4)?;
                        self.last = Some((shape.clone(), MemoryFormat::ChannelsFirst, false));
                        self.f16_last = false;
                    }
                    (Err(_), false) => {}
                    (r, e) => {
                        return Err(format!(
                            "forward_into {shape:?} out={out}: gpu {r:?}, expected ok={e}"
                        ))
                    }
                }
            }
            Cmd::EncodeForward { shape, seed } => {
                let numel: usize = shape.iter().product();
                let d = data(*seed, numel);
                let x = self.tensor(&d, shape, MemoryFormat::ChannelsFirst, Bad::None)?;
                let mut enc = self
                    .ctx
                    .device()
                    .create_command_encoder(&Default::default());
                let r = self.gpu.encode_forward(&mut enc, &x);
                self.ctx.queue().submit([enc.finish()]);
                let mut probe = self.model.clone();
                match (r, probe.forward(&d, shape)) {
                    (Ok(y), Ok(_)) => {
                        let want = self.model.forward(&d, shape).map_err(err)?;
                        let y = y.to_vec().map_err(err)?;
                        common::check_close("encoded output", &y, &common::f64s(&want), 2e-4)?;
                        self.last = Some((shape.clone(), MemoryFormat::ChannelsFirst, false));
                        self.f16_last = false;
                    }
                    (Err(_), Err(_)) => {}
                    (g, m) => {
                        return Err(format!(
                            "encode_forward {shape:?}: gpu {:?} model {:?}",
                            g.err(),
                            m.err()
                        ))
                    }
                }
            }
            Cmd::Backward {
                seed,
                wrong_shape,
                bad,
            } => {
                let Some((shape, format, sharded)) = self.last.clone() else {
                    let dy = Tensor::zeros(self.ctx, &[2, 2]).map_err(err)?;
                    return match self.gpu.backward(&dy) {
                        Err(Error::NoForward) => Ok(()),
                        r => Err(format!("backward before forward: {:?}", r.err())),
                    };
                };
                let shape2: Vec<usize> = if *wrong_shape {
                    shape.iter().map(|d| d + 1).collect()
                } else {
                    shape.clone()
                };
                let numel: usize = shape2.iter().product();
                let dy = self.tensor(&data(*seed, numel), &shape2, format, *bad)?;
                let should_fail = *wrong_shape
                    || *bad == Bad::Foreign
                    || *bad == Bad::WrongDtype
                    || sharded
                    || (*bad == Bad::StorageOnly && !numel.is_multiple_of(4));
                let r = self.gpu.backward(&dy);
                if self.f16_last {
                    // f16 grad_output of the right shape is valid, any
                    // other is an error; either way nothing else changes.
                    return Ok(());
                }
                match (r, should_fail) {
                    (Ok(g), false) => {
                        let want = self.model.backward(&data(*seed, numel)).map_err(err)?;
                        compare_grads("backward", &g, &want)?;
                    }
                    (Err(_), true) => {}
                    (r, f) => return Err(format!("backward ({bad:?}, wrong={wrong_shape}, sharded={sharded}): gpu {:?}, should fail {f}", r.err())),
                }
            }
            other => self.apply_state(other)?,
        }
        Ok(())
    }

    /// The observable state equals the model's; with `backward`, also
    /// what a backward of the last forward returns (not after every
    /// command: a backward settles state an eval forward leaves pending,
    /// and sequences without one in between must be tried too).
    fn check(&mut self, backward: bool) -> Res<()> {
        let pairs = [
            (
                "weight",
                self.gpu.weight().map_err(err)?,
                self.model.weight(),
            ),
            ("bias", self.gpu.bias().map_err(err)?, self.model.bias()),
            (
                "running_mean",
                self.gpu.running_mean().map_err(err)?,
                self.model.running_mean(),
            ),
            (
                "running_var",
                self.gpu.running_var().map_err(err)?,
                self.model.running_var(),
            ),
        ];
        for (name, g, m) in pairs {
            match (g, m) {
                (Some(g), Some(m)) => common::check_close(name, &g, &common::f64s(&m), 1e-4)?,
                (None, None) => {}
                (g, m) => return Err(format!("{name}: gpu {g:?} model {m:?}")),
            }
        }
        if self.gpu.num_batches_tracked() != self.model.num_batches_tracked() {
            return Err(format!(
                "num_batches_tracked: gpu {} model {}",
                self.gpu.num_batches_tracked(),
                self.model.num_batches_tracked()
            ));
        }
        // What a backward of the last forward returns.
        if let Some((shape, format, false)) = self.last.clone().filter(|_| backward) {
            let numel: usize = shape.iter().product();
            let d = data(99, numel);
            let dy = Tensor::from_slice_with_format(self.ctx, &d, &shape, format).map_err(err)?;
            let g = self.gpu.backward(&dy).map_err(err)?;
            let want = self.model.backward(&d).map_err(err)?;
            compare_grads("backward", &g, &want)?;
        }
        Ok(())
    }
}

fn run<R: SpatialRank>(ctx: &GpuContext, foreign: &GpuContext, case: &Case) -> Res<()> {
    let mut pair = Pair::<R> {
        ctx,
        foreign,
        gpu: BatchNorm::new(ctx, case.cfg.clone()).map_err(err)?,
        model: cpu::BatchNorm::new(case.cfg.clone()).map_err(err)?,
        last: None,
        f16_last: false,
    };
    for (i, cmd) in case.cmds.iter().enumerate() {
        pair.apply(cmd)
            .map_err(|e| format!("command {i} {cmd:?}: {e}"))?;
        pair.check(i % 3 == 2 || i + 1 == case.cmds.len())
            .map_err(|e| format!("after command {i} {cmd:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn random_call_sequences_match_the_model() {
    let Some((default, foreign, split)) = contexts() else {
        return;
    };
    let cases = std::env::var("BN_STATE_MACHINE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        let ctx = if case.split { split } else { default };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match case.rank {
            1 => run::<Rank1d>(ctx, foreign, &case),
            2 => run::<Rank2d>(ctx, foreign, &case),
            _ => run::<Rank3d>(ctx, foreign, &case),
        }));
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TestCaseError::fail(format!("{e}\n{case:#?}"))),
            Err(_) => Err(TestCaseError::fail(format!("panicked\n{case:#?}"))),
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
