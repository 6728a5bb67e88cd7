//! Fitting into real apps: the app's own buffers and encoders, async
//! read-back, PyTorch checkpoints (`safetensors`), inference folding (`fold`).
//! Test names carry the feature so `cargo test NAME` runs them alone.

// Parts need the default features; without them the helpers go unused.
#![cfg_attr(not(feature = "safetensors"), allow(unused))]

mod common;

use serde_json::Value;
use wgpu_batchnorm::{wgpu, BatchNorm1d, BatchNorm1dConfig, Error, StateDict, Tensor};

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn case(name: &str) -> Value {
    let text = std::fs::read_to_string(data("pytorch_cases.json")).expect("cases");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .expect("case")
        .clone()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("num") as f32)
        .collect()
}

/// A float32 tensor of a safetensors file, as f32 values.
#[cfg(feature = "safetensors")]
fn safetensors_f32(bytes: &[u8], key: &str) -> Vec<f32> {
    let file = safetensors::SafeTensors::deserialize(bytes).expect("safetensors");
    let view = file.tensor(key).expect("key");
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `bn_checkpoint.safetensors` was written by `safetensors.torch.save_file`
/// of a real `torch.nn.BatchNorm1d` state dict (`tests/data/make_bn_checkpoint.py`),
/// with torch's own eval output for one input stored beside it.
#[cfg(feature = "safetensors")]
#[test]
fn safetensors_pytorch_checkpoint_reproduces_pytorch_eval_output() {
    let Some(ctx) = common::context() else { return };
    let c = case("seq_3d_5x4x7_cfg0");
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(4)).expect("bn");
    bn.load_safetensors(data("bn_checkpoint.safetensors"), "bn1.")
        .expect("load");
    assert_eq!(bn.num_batches_tracked(), 3);
    bn.eval();
    let step = &c["steps"][4];
    assert_eq!(step["mode"], "eval");
    let shape: Vec<usize> = step["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("d") as usize)
        .collect();
    let bytes = std::fs::read(data("bn_checkpoint.safetensors")).expect("file");
    let input = safetensors_f32(&bytes, "expected.input");
    assert_eq!(input, f32s(&step["input"]));
    let y = bn
        .forward(&Tensor::from_slice(&ctx, &input, &shape).expect("x"))
        .expect("forward")
        .to_vec()
        .expect("read");
    // torch's output for this state, from the file...
    let torch_out: Vec<f64> = safetensors_f32(&bytes, "expected.output")
        .into_iter()
        .map(f64::from)
        .collect();
    common::check_close(
        "eval output vs the file's torch output",
        &y,
        &torch_out,
        1e-5,
    )
    .expect("matches PyTorch within 1e-5");
    // ...and as recorded in the conformance case.
    let want: Vec<f64> = step["output"]
        .as_array()
        .expect("out")
        .iter()
        .map(|v| v.as_f64().expect("n"))
        .collect();
    common::check_close("eval output vs the recorded case", &y, &want, 1e-5)
        .expect("matches PyTorch within 1e-5");
}

#[cfg(feature = "safetensors")]
#[test]
fn safetensors_round_trip_and_prefixes() {
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3)).expect("bn");
    bn.set_weight(&[1.5, -2.0, 0.25]).expect("w");
    bn.set_bias(&[0.1, 0.2, 0.3]).expect("b");
    bn.forward(&Tensor::from_slice(&ctx, &[1., 2., 3., 4., 5., 7.], &[2, 3]).expect("x"))
        .expect("fw");
    let path =
        std::env::temp_dir().join(format!("bn-roundtrip-{}.safetensors", std::process::id()));
    bn.save_safetensors(&path, "layer.3.").expect("save");
    let mut other = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3)).expect("bn");
    other.load_safetensors(&path, "layer.3.").expect("load");
    assert_eq!(
        other.state_dict().expect("sd"),
        bn.state_dict().expect("sd")
    );
    assert_eq!(
        bn.state_dict().expect("sd").keys(),
        vec![
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked"
        ]
    );
    // Wrong prefix: missing keys, and nothing changes.
    let mut fresh = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3)).expect("bn");
    let before = fresh.state_dict().expect("sd");
    let err = fresh.load_safetensors(&path, "bn1.").expect_err("missing");
    assert!(err.to_string().contains("missing key"), "{err}");
    assert!(
        matches!(&err, Error::Checkpoint { problem: wgpu_batchnorm::CheckpointProblem::MissingKey, key: Some(k), .. } if k.starts_with("bn1.")),
        "{err:?}"
    );
    assert_eq!(fresh.state_dict().expect("sd"), before);
    // Wrong channel count.
    let mut wide = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(4)).expect("bn");
    assert!(matches!(
        wide.load_safetensors(&path, "layer.3."),
        Err(Error::Checkpoint {
            problem: wgpu_batchnorm::CheckpointProblem::Shape,
            ..
        })
    ));
    std::fs::remove_file(&path).ok();
}

#[cfg(feature = "safetensors")]
#[test]
fn safetensors_rejects_wrong_dtypes_and_shapes() {
    let sd = StateDict {
        weight: Some(vec![1.0; 2]),
        bias: Some(vec![0.0; 2]),
        running_mean: Some(vec![0.0; 2]),
        running_var: Some(vec![1.0; 2]),
        num_batches_tracked: Some(5),
        ..Default::default()
    };
    let good = sd.to_safetensors("").expect("bytes");
    assert_eq!(
        StateDict::from_safetensors(&good, "", true, true).expect("parse"),
        sd
    );
    // An integer weight is rejected, naming the dtypes that load.
    use safetensors::tensor::{Dtype, TensorView};
    let w32: Vec<u8> = [1i32, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f: Vec<u8> = [0.0f32, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bad = safetensors::serialize(
        vec![
            (
                "weight",
                TensorView::new(Dtype::I32, vec![2], &w32).expect("v"),
            ),
            ("bias", TensorView::new(Dtype::F32, vec![2], &f).expect("v")),
        ],
        None,
    )
    .expect("ser");
    let err = StateDict::from_safetensors(&bad, "", true, false).expect_err("dtype");
    assert!(
        err.to_string().contains("expected F32, F16, BF16 or F64"),
        "{err}"
    );
    let matrix = safetensors::serialize(
        vec![
            (
                "weight",
                TensorView::new(Dtype::F32, vec![1, 2], &f).expect("v"),
            ),
            ("bias", TensorView::new(Dtype::F32, vec![2], &f).expect("v")),
        ],
        None,
    )
    .expect("ser");
    let err = StateDict::from_safetensors(&matrix, "", true, false).expect_err("shape");
    assert!(err.to_string().contains("shape"), "{err}");
    assert!(StateDict::from_safetensors(b"not a safetensors file", "", true, true).is_err());
}

#[cfg(feature = "safetensors")]
#[test]
fn safetensors_state_dict_is_strict() {
    let Some(ctx) = common::context() else { return };
    let cfg = BatchNorm1dConfig::new(2).affine(false);
    let mut bn = BatchNorm1d::new(&ctx, cfg).expect("bn");
    let sd = bn.state_dict().expect("sd");
    assert_eq!(
        sd.keys(),
        vec!["running_mean", "running_var", "num_batches_tracked"]
    );
    let mut extra = sd.clone();
    extra.weight = Some(vec![1.0; 2]);
    assert!(bn.load_state_dict(&extra).is_err());
    let mut short = sd.clone();
    short.running_var = Some(vec![1.0]);
    assert!(bn.load_state_dict(&short).is_err());
    bn.load_state_dict(&sd).expect("exact");
}

#[test]
fn fold_matches_linear_then_batch_norm() {
    let Some(ctx) = common::context() else { return };
    let (batch, d_in, c) = (16, 5, 6);
    let mut rng = common::Rng(77);
    let w = rng.normals(c * d_in, 0.0, 0.5);
    let b = rng.normals(c, 0.0, 0.5);
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c)).expect("bn");
    bn.set_weight(&rng.normals(c, 1.0, 0.3)).expect("w");
    bn.set_bias(&rng.normals(c, 0.0, 0.3)).expect("b");
    let linear = |x: &[f32], w: &[f32], b: &[f32]| -> Vec<f32> {
        (0..batch * c)
            .map(|i| {
                let (r, o) = (i / c, i % c);
                b[o] + (0..d_in)
                    .map(|k| x[r * d_in + k] * w[o * d_in + k])
                    .sum::<f32>()
            })
            .collect()
    };
    for _ in 0..5 {
        let x = rng.normals(batch * d_in, 1.0, 2.0);
        bn.forward(&Tensor::from_slice(&ctx, &linear(&x, &w, &b), &[batch, c]).expect("h"))
            .expect("train");
    }
    bn.eval();
    let x = rng.normals(batch * d_in, 1.0, 2.0);
    let two_layers = bn
        .forward(&Tensor::from_slice(&ctx, &linear(&x, &w, &b), &[batch, c]).expect("h"))
        .expect("eval")
        .to_vec()
        .expect("read");
    let folded = bn.fold_into_linear(&w, Some(&b), d_in).expect("fold");
    let one_layer = linear(&x, &folded.weight, &folded.bias);
    for (a, b) in two_layers.iter().zip(&one_layer) {
        assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
    let (tw, tb) = folded.to_tensors(&ctx).expect("upload");
    assert_eq!(tw.shape(), &[c, d_in]);
    assert_eq!(tb.to_vec().expect("read"), folded.bias);
    // Errors: wrong sizes, no running statistics.
    assert!(bn.fold_into_linear(&w[1..], Some(&b), d_in).is_err());
    assert!(bn.fold_into_linear(&w, Some(&b[1..]), d_in).is_err());
    let plain =
        BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c).track_running_stats(false)).expect("bn");
    assert!(plain.fold_into_linear(&w, None, d_in).is_err());
    // A conv weight shape (out = C, then anything) whose size passes usize
    // is an error, not an overflow.
    assert!(matches!(
        bn.fold_into_conv(&w, &[c, 1 << 33, 1 << 33], None),
        Err(wgpu_batchnorm::Error::TooLarge(_))
    ));
    assert!(bn.fold_into_conv(&w, &[c, 1, d_in], Some(&b)).is_ok());
}

/// Folding adds eps to the running variance as an f32, as the eval forward
/// and PyTorch's `fuse_linear_bn_eval` do: a running variance of `-eps`
/// (an f32) gives an infinite scale in all three, not the f64 remainder's
/// finite 6e6.
#[test]
fn fold_adds_eps_as_the_eval_forward_does() {
    let Some(ctx) = common::context() else { return };
    let eps = 1e-5_f32;
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(2)).expect("bn");
    bn.set_running_var(&[-eps, 0.5]).expect("var");
    bn.eval();
    let x = Tensor::from_slice(&ctx, &[1.0, 1.0], &[1, 2]).expect("x");
    let y = bn.forward(&x).expect("eval").to_vec().expect("read");
    let folded = bn.fold_into_linear(&[1.0, 1.0], None, 1).expect("fold");
    assert!(
        y[0].is_infinite() && folded.weight[0].is_infinite(),
        "{y:?} {folded:?}"
    );
    let s = 1.0 / f64::from(0.5_f32 + eps).sqrt();
    assert_eq!(folded.weight[1], s as f32);
    assert!(
        (y[1] - folded.weight[1]).abs() <= 1e-6 * y[1].abs(),
        "{y:?} {folded:?}"
    );
}

#[test]
fn encode_into_the_apps_encoder_and_buffers() {
    let Some(ctx) = common::context() else { return };
    let device = ctx.device();
    let (n, c) = (12, 4);
    let x: Vec<f32> = (0..n * c)
        .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
        .collect();
    // The app's own buffer, with other data before the tensor.
    let align = u64::from(device.limits().min_storage_buffer_offset_alignment);
    let app = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app/activations"),
        size: align + (n * c * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    ctx.queue()
        .write_buffer(&app, align, bytemuck::cast_slice(&x));
    let tx = Tensor::from_buffer(&ctx, app.clone(), align, &[n, c]).expect("wrap");

    let mut reference = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c)).expect("bn");
    let want_y = reference
        .forward(&Tensor::from_slice(&ctx, &x, &[n, c]).expect("x"))
        .expect("fw")
        .to_vec()
        .expect("read");
    let dy = Tensor::from_slice(&ctx, &vec![0.5; n * c], &[n, c]).expect("dy");
    let want_dx = reference
        .backward(&dy)
        .expect("bw")
        .grad_input
        .to_vec()
        .expect("read");

    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c)).expect("bn");
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("app/frame"),
    });
    let y = bn
        .encode_forward(&mut encoder, &tx)
        .expect("encode forward");
    let g = bn
        .encode_backward(&mut encoder, &dy)
        .expect("encode backward");
    ctx.queue().submit([encoder.finish()]);
    assert_eq!(y.to_vec().expect("read"), want_y);
    assert_eq!(g.grad_input.to_vec().expect("read"), want_dx);
    assert_eq!(
        bn.running_mean().expect("rm"),
        reference.running_mean().expect("rm")
    );
    // The unpadded application tensor is read through a padded copy.
    assert_eq!(tx.to_vec().expect("read"), x);
}

#[test]
fn to_vec_async_reads_back_without_blocking_poll() {
    let Some(ctx) = common::context() else { return };
    let t = Tensor::from_slice(&ctx, &[1.0, 2.0, 3.0], &[3]).expect("t");
    let v = pollster::block_on(t.to_vec_async()).expect("async read");
    assert_eq!(v, vec![1.0, 2.0, 3.0]);
    let empty = Tensor::zeros(&ctx, &[0, 4]).expect("empty");
    assert!(pollster::block_on(empty.to_vec_async())
        .expect("read")
        .is_empty());
}

#[test]
fn forward_into_checks_its_output() {
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(4)).expect("bn");
    let x = Tensor::zeros(&ctx, &[8, 4]).expect("x");
    let wrong = Tensor::zeros(&ctx, &[4, 8]).expect("y");
    assert!(matches!(
        bn.forward_into(&x, &wrong),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(bn.num_batches_tracked(), 0);
    let y = Tensor::zeros(&ctx, &[8, 4]).expect("y");
    bn.forward_into(&x, &y).expect("ok");
    // In place is rejected by wgpu's usage rules and reported, not a panic.
    assert!(bn.forward_into(&x, &x).is_err());
    assert_eq!(bn.num_batches_tracked(), 1);
}
