//! Replays every case recorded from PyTorch (`tests/data/pytorch_cases.json`
//! for `BatchNorm1d`, `pytorch_cases_nd.json` for `BatchNorm2d`/`3d`)
//! through one driver, for the GPU modules (channels-first and
//! channels-last) and the CPU reference, comparing outputs, gradients and
//! buffers after every step, error steps included.

mod common;
#[path = "conformance/data.rs"]
mod data;

use common::{from_channels_last, to_channels_last};
use data::*;
use serde_json::Value;
use wgpu_batchnorm::{
    cpu, Activation, BatchNorm, BatchNormConfig, Epilogue, GpuContext, MemoryFormat, Rank, Rank1d,
    Rank2d, Rank3d, SpatialRank, Tensor,
};

/// `(grad_input, grad_weight, grad_bias, grad_residual)` on the host.
type HostGrads = (
    Vec<f32>,
    Option<Vec<f32>>,
    Option<Vec<f32>>,
    Option<Vec<f32>>,
);

/// What one implementation produced for a step (channels-first order).
struct StepResult {
    output: Option<Vec<f32>>,
    grads: Option<HostGrads>,
    running: (Option<Vec<f32>>, Option<Vec<f32>>),
    nbt: u64,
}

/// One step's data, channels-first.
struct StepData<'a> {
    input: &'a [f32],
    shape: &'a [usize],
    residual: Option<&'a [f32]>,
    relu: bool,
    dy: Option<&'a [f32]>,
}

/// One implementation under replay.
trait Replay {
    fn init(&mut self, key: &str, values: &[f32]);
    fn set_training(&mut self, train: bool);
    /// Forward of the step's input (through the fused epilogue, if any),
    /// then backward of `dy` if given and the forward succeeded.
    fn step(&mut self, d: &StepData<'_>) -> StepResult;
}

struct Gpu<R: SpatialRank> {
    ctx: GpuContext,
    bn: BatchNorm<R>,
    format: MemoryFormat,
}

impl<R: SpatialRank> Replay for Gpu<R> {
    fn init(&mut self, key: &str, v: &[f32]) {
        match key {
            "weight" => self.bn.set_weight(v),
            "bias" => self.bn.set_bias(v),
            "running_mean" => self.bn.set_running_mean(v),
            _ => self.bn.set_running_var(v),
        }
        .expect(key)
    }

    fn set_training(&mut self, train: bool) {
        if train {
            self.bn.train()
        } else {
            self.bn.eval()
        }
    }

    fn step(&mut self, d: &StepData<'_>) -> StepResult {
        let shape = d.shape;
        let cl = self.format == MemoryFormat::ChannelsLast && shape.len() > 2;
        let store = |v: &[f32]| {
            if cl {
                to_channels_last(v, shape)
            } else {
                v.to_vec()
            }
        };
        let load = |v: Vec<f32>| if cl { from_channels_last(&v, shape) } else { v };
        let upload = |v: &[f32]| {
            Tensor::from_slice_with_format(&self.ctx, &store(v), shape, self.format)
                .expect("tensor")
        };
        let x = upload(d.input);
        let r = d.residual.map(upload);
        let activation = if d.relu {
            Activation::Relu
        } else {
            Activation::Identity
        };
        let epilogue = Epilogue {
            residual: r.as_ref(),
            activation,
        };
        let output = self
            .bn
            .forward_fused(&x, epilogue)
            .ok()
            .map(|y| load(y.to_vec().expect("read")));
        let grads = match (&output, d.dy) {
            (Some(_), Some(dy)) => {
                let g = self.bn.backward(&upload(dy)).expect("backward");
                let read = |t: Option<Tensor>| t.map(|t| t.to_vec().expect("read"));
                Some((
                    load(g.grad_input.to_vec().expect("read")),
                    read(g.grad_weight),
                    read(g.grad_bias),
                    read(g.grad_residual).map(load),
                ))
            }
            _ => None,
        };
        StepResult {
            output,
            grads,
            running: (
                self.bn.running_mean().expect("rm"),
                self.bn.running_var().expect("rv"),
            ),
            nbt: self.bn.num_batches_tracked(),
        }
    }
}

struct Cpu<R: SpatialRank> {
    bn: cpu::BatchNorm<R>,
}

impl<R: SpatialRank> Replay for Cpu<R> {
    fn init(&mut self, key: &str, v: &[f32]) {
        match key {
            "weight" => self.bn.set_weight(v),
            "bias" => self.bn.set_bias(v),
            "running_mean" => self.bn.set_running_mean(v),
            _ => self.bn.set_running_var(v),
        }
        .expect(key)
    }

    fn set_training(&mut self, train: bool) {
        if train {
            self.bn.train()
        } else {
            self.bn.eval()
        }
    }

    fn step(&mut self, d: &StepData<'_>) -> StepResult {
        let format = MemoryFormat::ChannelsFirst;
        let output = self
            .bn
            .forward_fused(d.input, d.shape, format, d.residual, d.relu)
            .ok();
        let grads = match (&output, d.dy) {
            (Some(_), Some(dy)) => {
                let g = self.bn.backward(dy).expect("backward");
                Some((g.grad_input, g.grad_weight, g.grad_bias, g.grad_residual))
            }
            _ => None,
        };
        StepResult {
            output,
            grads,
            running: (self.bn.running_mean(), self.bn.running_var()),
            nbt: self.bn.num_batches_tracked(),
        }
    }
}

fn compare(name: &str, i: usize, step: &Value, r: &StepResult, tol: f64) -> Result<(), String> {
    let at = |what: &str| format!("{name} step {i} {what}");
    if step.get("error").is_some() {
        if r.output.is_some() {
            return Err(at("expected an error, got Ok"));
        }
    } else {
        let out = r.output.as_ref().ok_or_else(|| at("unexpected error"))?;
        common::check_close(&at("output"), out, &nums(&step["output"]), tol)?;
    }
    if let Some((gi, gw, gb, gr)) = &r.grads {
        common::check_close(&at("grad_input"), gi, &nums(&step["grad_input"]), tol)?;
        for (key, got) in [
            ("grad_weight", gw),
            ("grad_bias", gb),
            ("grad_residual", gr),
        ] {
            match (step.get(key), got) {
                (Some(want), Some(got)) => common::check_close(&at(key), got, &nums(want), tol)?,
                (None, None) => {}
                _ => return Err(at(&format!("{key} presence differs"))),
            }
        }
    }
    for (key, got) in [
        ("running_mean", &r.running.0),
        ("running_var", &r.running.1),
    ] {
        match (step.get(key), got) {
            (Some(want), Some(got)) => common::check_close(&at(key), got, &nums(want), tol)?,
            (None, None) => {}
            _ => return Err(at(&format!("{key} presence differs"))),
        }
    }
    if let Some(want) = step.get("num_batches_tracked") {
        if want.as_u64() != Some(r.nbt) {
            return Err(at(&format!("num_batches_tracked {} != {want}", r.nbt)));
        }
    }
    Ok(())
}

/// Replays every case through the implementations `make` builds; returns
/// the number of cases.
fn replay(label: &str, make: impl Fn(Rank, BatchNormConfig) -> Box<dyn Replay>) -> usize {
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let name = case["name"].as_str().expect("name");
        let tol = case["tol"].as_f64().unwrap_or(1e-4);
        let mut m = make(rank(case), config(case));
        for key in ["weight", "bias", "running_mean", "running_var"] {
            if let Some(v) = case.get("init").and_then(|i| i.get(key)).map(f32s) {
                m.init(key, &v);
            }
        }
        let relu = case["epilogue"]["relu"].as_bool().unwrap_or(false);
        for (i, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
            m.set_training(step["mode"] == "train");
            let dy = step.get("grad_output").map(f32s);
            let residual = step.get("residual").map(f32s);
            let (input, shape) = (f32s(&step["input"]), shape(&step["shape"]));
            let r = m.step(&StepData {
                input: &input,
                shape: &shape,
                residual: residual.as_deref(),
                relu,
                dy: dy.as_deref(),
            });
            if let Err(e) = compare(name, i, step, &r, tol) {
                failures.push(format!("{label}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    all.len()
}

fn gpu(
    ctx: &GpuContext,
    format: MemoryFormat,
) -> impl Fn(Rank, BatchNormConfig) -> Box<dyn Replay> + '_ {
    move |rank, cfg| -> Box<dyn Replay> {
        fn make<R: SpatialRank>(
            ctx: &GpuContext,
            cfg: BatchNormConfig,
            format: MemoryFormat,
        ) -> Box<dyn Replay> {
            let bn = BatchNorm::<R>::new(ctx, cfg).expect("module");
            Box::new(Gpu {
                ctx: ctx.clone(),
                bn,
                format,
            })
        }
        match rank {
            Rank::D1 => make::<Rank1d>(ctx, cfg, format),
            Rank::D2 => make::<Rank2d>(ctx, cfg, format),
            Rank::D3 => make::<Rank3d>(ctx, cfg, format),
        }
    }
}

#[test]
fn replay_gpu() {
    let Some(ctx) = common::context() else { return };
    let n = replay("gpu", gpu(&ctx, MemoryFormat::ChannelsFirst));
    assert!(n >= 60, "only {n} cases");
}

/// The same cases with every 3-D, 4-D and 5-D input stored channels-last.
#[test]
fn replay_gpu_channels_last() {
    let Some(ctx) = common::context() else { return };
    replay("gpu channels-last", gpu(&ctx, MemoryFormat::ChannelsLast));
}

#[test]
fn replay_cpu() {
    replay("cpu", |rank, cfg| -> Box<dyn Replay> {
        match rank {
            Rank::D1 => Box::new(Cpu::<Rank1d> {
                bn: cpu::BatchNorm::new(cfg).expect("module"),
            }),
            Rank::D2 => Box::new(Cpu::<Rank2d> {
                bn: cpu::BatchNorm::new(cfg).expect("module"),
            }),
            Rank::D3 => Box::new(Cpu::<Rank3d> {
                bn: cpu::BatchNorm::new(cfg).expect("module"),
            }),
        }
    });
}

#[test]
fn error_wording_matches_pytorch() {
    let mut seen = 0;
    for case in &cases() {
        for step in case["steps"].as_array().expect("steps") {
            let Some(want) = step.get("error").and_then(Value::as_str) else {
                continue;
            };
            let cfg = config(case);
            let (x, s) = (f32s(&step["input"]), shape(&step["shape"]));
            let train = step["mode"] == "train";
            let got = match rank(case) {
                Rank::D1 => run_cpu::<Rank1d>(cfg, train, &x, &s),
                Rank::D2 => run_cpu::<Rank2d>(cfg, train, &x, &s),
                Rank::D3 => run_cpu::<Rank3d>(cfg, train, &x, &s),
            };
            let want = want.split_once(": ").map_or(want, |(_, m)| m);
            assert_eq!(got.as_deref(), Some(want));
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} error steps in the cases");
}

fn run_cpu<R: SpatialRank>(
    cfg: BatchNormConfig,
    train: bool,
    x: &[f32],
    s: &[usize],
) -> Option<String> {
    let mut bn = cpu::BatchNorm::<R>::new(cfg).expect("module");
    if !train {
        bn.eval();
    }
    bn.forward(x, s).err().map(|e| e.to_string())
}
