//! Replays every case of `tests/data/pytorch_cases.json` (recorded from
//! `torch.nn.BatchNorm1d`) through the GPU module and the CPU reference,
//! comparing outputs, gradients and buffers after every step, error steps
//! included.

mod common;

use serde_json::Value;
use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNorm1dConfig, Tensor};

fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => match s.as_str() {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            other => panic!("bad number {other:?}"),
        },
        other => panic!("bad number {other:?}"),
    }
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(num).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    nums(v).into_iter().map(|x| x as f32).collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect()
}

fn config(case: &Value) -> BatchNorm1dConfig {
    let c = &case["config"];
    BatchNorm1dConfig::new(c["num_features"].as_u64().expect("nf") as usize)
        .eps(num(&c["eps"]))
        .momentum(c["momentum"].as_f64())
        .affine(c["affine"].as_bool().expect("affine"))
        .track_running_stats(c["track_running_stats"].as_bool().expect("track"))
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pytorch_cases.json"
    ))
    .expect("read cases");
    let v: Value = serde_json::from_str(&text).expect("parse cases");
    v["cases"].as_array().expect("cases").clone()
}

/// `(grad_input, grad_weight, grad_bias)` read back to the host.
type HostGrads = (Vec<f32>, Option<Vec<f32>>, Option<Vec<f32>>);

/// What one implementation produced for a step.
struct StepResult {
    output: Option<Vec<f32>>,
    grads: Option<HostGrads>,
    running: (Option<Vec<f32>>, Option<Vec<f32>>),
    nbt: u64,
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
    if let Some((gi, gw, gb)) = &r.grads {
        common::check_close(&at("grad_input"), gi, &nums(&step["grad_input"]), tol)?;
        for (key, got) in [("grad_weight", gw), ("grad_bias", gb)] {
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

/// Calls `set(name, values)` for each buffer the case initialises.
fn for_each_init(case: &Value, mut set: impl FnMut(&str, &[f32])) {
    for key in ["weight", "bias", "running_mean", "running_var"] {
        if let Some(v) = case.get("init").and_then(|i| i.get(key)).map(f32s) {
            set(key, &v);
        }
    }
}

#[test]
fn replay_gpu() {
    let Some(ctx) = common::context() else { return };
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let name = case["name"].as_str().expect("name");
        let tol = case["tol"].as_f64().unwrap_or(1e-4);
        let mut bn = BatchNorm1d::new(&ctx, config(case)).expect("module");
        for_each_init(case, |key, v| {
            match key {
                "weight" => bn.set_weight(v),
                "bias" => bn.set_bias(v),
                "running_mean" => bn.set_running_mean(v),
                _ => bn.set_running_var(v),
            }
            .expect(key)
        });
        for (i, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
            if step["mode"] == "train" {
                bn.train()
            } else {
                bn.eval()
            }
            let x = Tensor::from_slice(&ctx, &f32s(&step["input"]), &shape(&step["shape"]))
                .expect("tensor");
            let out = bn.forward(&x);
            let output = out.ok().map(|y| y.to_vec().expect("read"));
            let grads = match (&output, step.get("grad_output")) {
                (Some(_), Some(dy)) => {
                    let dy = Tensor::from_slice(&ctx, &f32s(dy), x.shape()).expect("dy");
                    let g = bn.backward(&dy).expect("backward");
                    let read = |t: Option<Tensor>| t.map(|t| t.to_vec().expect("read"));
                    Some((
                        g.grad_input.to_vec().expect("read"),
                        read(g.grad_weight),
                        read(g.grad_bias),
                    ))
                }
                _ => None,
            };
            let r = StepResult {
                output,
                grads,
                running: (
                    bn.running_mean().expect("rm"),
                    bn.running_var().expect("rv"),
                ),
                nbt: bn.num_batches_tracked(),
            };
            if let Err(e) = compare(name, i, step, &r, tol) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("replayed {} cases on the GPU", all.len());
}

#[test]
fn replay_cpu() {
    let mut failures = Vec::new();
    for case in &cases() {
        let name = case["name"].as_str().expect("name");
        let tol = case["tol"].as_f64().unwrap_or(1e-4);
        let mut bn = cpu::BatchNorm1d::new(config(case)).expect("module");
        for_each_init(case, |key, v| {
            match key {
                "weight" => bn.set_weight(v),
                "bias" => bn.set_bias(v),
                "running_mean" => bn.set_running_mean(v),
                _ => bn.set_running_var(v),
            }
            .expect(key)
        });
        for (i, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
            if step["mode"] == "train" {
                bn.train()
            } else {
                bn.eval()
            }
            let output = bn
                .forward(&f32s(&step["input"]), &shape(&step["shape"]))
                .ok();
            let grads = match (&output, step.get("grad_output")) {
                (Some(_), Some(dy)) => {
                    let g = bn.backward(&f32s(dy)).expect("backward");
                    Some((g.grad_input, g.grad_weight, g.grad_bias))
                }
                _ => None,
            };
            let r = StepResult {
                output,
                grads,
                running: (bn.running_mean(), bn.running_var()),
                nbt: bn.num_batches_tracked(),
            };
            if let Err(e) = compare(name, i, step, &r, tol) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn error_wording_matches_pytorch() {
    let mut seen = 0;
    for case in &cases() {
        let mut bn = cpu::BatchNorm1d::new(config(case)).expect("module");
        for step in case["steps"].as_array().expect("steps") {
            if step["mode"] == "train" {
                bn.train()
            } else {
                bn.eval()
            }
            let r = bn.forward(&f32s(&step["input"]), &shape(&step["shape"]));
            if let Some(want) = step.get("error").and_then(Value::as_str) {
                let got = r.expect_err("expected an error").to_string();
                let want = want.split_once(": ").map_or(want, |(_, m)| m);
                assert_eq!(got, want);
                seen += 1;
            }
        }
    }
    assert!(seen > 0, "no error steps in the cases");
}
