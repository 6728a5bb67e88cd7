//! The recorded cases and their JSON fields.

use serde_json::Value;
use wgpu_batchnorm::{BatchNormConfig, Rank};

pub fn num(v: &Value) -> f64 {
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

pub fn nums(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(num).collect()
}

pub fn f32s(v: &Value) -> Vec<f32> {
    nums(v).into_iter().map(|x| x as f32).collect()
}

pub fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect()
}

pub fn config(case: &Value) -> BatchNormConfig {
    let c = &case["config"];
    BatchNormConfig::new(c["num_features"].as_u64().expect("nf") as usize)
        .eps(num(&c["eps"]))
        .momentum(c["momentum"].as_f64())
        .affine(c["affine"].as_bool().expect("affine"))
        .track_running_stats(c["track_running_stats"].as_bool().expect("track"))
}

pub fn rank(case: &Value) -> Rank {
    match case.get("module").and_then(Value::as_str) {
        None | Some("BatchNorm1d") => Rank::D1,
        Some("BatchNorm2d") => Rank::D2,
        Some("BatchNorm3d") => Rank::D3,
        Some(other) => panic!("unknown module {other}"),
    }
}

pub fn cases() -> Vec<Value> {
    let mut all = Vec::new();
    for file in [
        "pytorch_cases.json",
        "pytorch_cases_nd.json",
        "pytorch_fused_cases.json",
    ] {
        let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).expect("read cases");
        let v: Value = serde_json::from_str(&text).expect("parse cases");
        all.extend(v["cases"].as_array().expect("cases").iter().cloned());
    }
    all
}
