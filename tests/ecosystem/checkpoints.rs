//! Checkpoints: safetensors files of every float dtype, and whole model
//! files written by torch itself.

use super::*;
use safetensors::{Dtype, SafeTensors};
use wgpu_batchnorm::{batch_norm_prefixes, load_batch_norms, AnyBatchNorm, FloatDtype, Rank};

/// A float tensor of a safetensors file as f32, whatever its dtype.
fn floats(bytes: &[u8], key: &str) -> (Vec<f32>, Vec<usize>) {
    let st = SafeTensors::deserialize(bytes).expect("file");
    let t = st.tensor(key).expect("key");
    let d = t.data();
    let v = match t.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(d),
        Dtype::F64 => bytemuck::pod_collect_to_vec::<u8, f64>(d)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(d)
            .into_iter()
            .map(f32::from)
            .collect(),
        Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(d)
            .into_iter()
            .map(f32::from)
            .collect(),
        other => panic!("{key}: {other:?}"),
    };
    (v, t.shape().to_vec())
}

/// Checkpoints of a model after `.half()`, `.bfloat16()` and
/// `.double()`, written by torch: they load into the f32 module, its
/// eval output matches torch's for that dtype, and a save in the file's
/// dtype writes that dtype back.
#[test]
fn safetensors_half_bfloat_and_double_checkpoints_load() {
    let Some(ctx) = common::context() else { return };
    for (file, dtype, tol) in [
        ("bn_checkpoint_f16.safetensors", FloatDtype::F16, 2e-3),
        ("bn_checkpoint_bf16.safetensors", FloatDtype::BF16, 2e-2),
        ("bn_checkpoint_f64.safetensors", FloatDtype::F64, 1e-5),
    ] {
        let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
        bn.load_safetensors(data(file), "bn1.").expect(file);
        assert_eq!(bn.checkpoint_dtype(), dtype, "{file}");
        assert_eq!(bn.num_batches_tracked(), 3);
        bn.eval();
        let bytes = std::fs::read(data(file)).expect("read");
        let (x, shape) = floats(&bytes, "expected.input");
        let (want, _) = floats(&bytes, "expected.output");
        let y = bn
            .forward(&Tensor::from_slice(&ctx, &x, &shape).expect("x"))
            .expect("eval")
            .to_vec()
            .expect("read");
        common::check_close(file, &y, &common::f64s(&want), tol).expect(file);
        // Saved back in the file's dtype.
        let path = std::env::temp_dir().join(format!("bn-{}-{file}", std::process::id()));
        bn.save_safetensors_as(&path, "bn1.", bn.checkpoint_dtype())
            .expect("save");
        let written = std::fs::read(&path).expect("read");
        let st = SafeTensors::deserialize(&written).expect("file");
        let want_dtype = match dtype {
            FloatDtype::F16 => Dtype::F16,
            FloatDtype::BF16 => Dtype::BF16,
            FloatDtype::F64 => Dtype::F64,
            FloatDtype::F32 => Dtype::F32,
        };
        assert_eq!(
            st.tensor("bn1.running_mean").expect("key").dtype(),
            want_dtype
        );
        assert_eq!(
            st.tensor("bn1.num_batches_tracked").expect("key").dtype(),
            Dtype::I64
        );
        let mut again = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
        again.load_safetensors(&path, "bn1.").expect("reload");
        assert_eq!(
            again.state_dict().expect("sd"),
            bn.state_dict().expect("sd")
        );
        std::fs::remove_file(&path).ok();
    }
}

/// A torch model with batch norms of every rank among other layers:
/// the prefixes are found, every layer loads in one call, and each
/// matches torch's eval output for it.
#[test]
fn safetensors_whole_model_files_load_every_batch_norm() {
    let Some(ctx) = common::context() else { return };
    let path = data("model_checkpoint.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let prefixes = batch_norm_prefixes(&bytes).expect("prefixes");
    assert_eq!(prefixes, ["bn_head.", "features.1.", "plain.", "volume.1."]);
    let layers = load_batch_norms(&ctx, &path, |prefix| {
        let rank = match prefix {
            "features.1." => Rank::D2,
            "volume.1." => Rank::D3,
            _ => Rank::D1,
        };
        let eps = if prefix == "bn_head." { 1e-3 } else { 1e-5 };
        Some((rank, BatchNormConfig::new(0).eps(eps)))
    })
    .expect("load");
    assert_eq!(layers.len(), 4);
    assert!(!layers["plain."].config().affine);
    assert_eq!(layers["features.1."].rank(), Rank::D2);
    for (prefix, layer) in layers {
        let (x, shape) = floats(&bytes, &format!("expected.{prefix}input"));
        let (want, _) = floats(&bytes, &format!("expected.{prefix}output"));
        let tx = Tensor::from_slice(&ctx, &x, &shape).expect("x");
        let y = match layer {
            AnyBatchNorm::D1(mut m) => {
                m.eval();
                m.forward(&tx)
            }
            AnyBatchNorm::D2(mut m) => {
                m.eval();
                m.forward(&tx)
            }
            AnyBatchNorm::D3(mut m) => {
                m.eval();
                m.forward(&tx)
            }
        }
        .expect("eval")
        .to_vec()
        .expect("read");
        common::check_close(&prefix, &y, &common::f64s(&want), 1e-5).expect("torch output");
    }
    // A layer can be skipped.
    let some = load_batch_norms(&ctx, &path, |p| {
        (p == "plain.").then(|| (Rank::D1, BatchNormConfig::new(0)))
    })
    .expect("load");
    assert_eq!(some.keys().collect::<Vec<_>>(), ["plain."]);
}

/// A layer with a weight but no bias is an error naming the missing
/// key, not a non-affine layer that silently drops the weight; a count
/// beyond int64 is an error on save, not a negative number in the file.
#[test]
fn safetensors_half_affine_layers_and_huge_counts_are_errors() {
    let Some(ctx) = common::context() else { return };
    let le = |v: &[f32]| -> Vec<u8> { bytemuck::cast_slice(v).to_vec() };
    let (w, m, var) = (le(&[2.0; 3]), le(&[0.5; 3]), le(&[1.5; 3]));
    let nbt = 4i64.to_le_bytes();
    fn view(bytes: &[u8], dtype: Dtype, shape: Vec<usize>) -> safetensors::tensor::TensorView<'_> {
        safetensors::tensor::TensorView::new(dtype, shape, bytes).expect("view")
    }
    let entries = vec![
        ("bn.weight", view(&w, Dtype::F32, vec![3])),
        ("bn.running_mean", view(&m, Dtype::F32, vec![3])),
        ("bn.running_var", view(&var, Dtype::F32, vec![3])),
        ("bn.num_batches_tracked", view(&nbt, Dtype::I64, vec![])),
    ];
    let bytes = safetensors::serialize(entries, None).expect("serialize");
    let path = std::env::temp_dir().join(format!("bn-half-affine-{}.st", std::process::id()));
    std::fs::write(&path, &bytes).expect("write");
    let got = load_batch_norms(&ctx, &path, |_| Some((Rank::D1, BatchNormConfig::new(0))));
    std::fs::remove_file(&path).ok();
    match got {
        Err(Error::Checkpoint {
            problem,
            key,
            detail,
        }) => {
            assert_eq!(
                problem,
                wgpu_batchnorm::CheckpointProblem::MissingKey,
                "{detail}"
            );
            assert_eq!(key.as_deref(), Some("bn.bias"), "{detail}");
        }
        other => panic!(
            "expected a missing-bias error, got {:?}",
            other.map(|m| m.len())
        ),
    }

    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    bn.set_num_batches_tracked(u64::MAX);
    let sd = bn.state_dict().expect("state");
    assert!(matches!(
        sd.to_safetensors("bn."),
        Err(Error::Checkpoint {
            problem: wgpu_batchnorm::CheckpointProblem::Value,
            ..
        })
    ));
    bn.set_num_batches_tracked(7);
    let sd = bn.state_dict().expect("state");
    sd.to_safetensors("bn.").expect("a count that fits saves");
}

/// PyTorch fills in a missing `num_batches_tracked` for state dicts without
/// version metadata (a `.safetensors` file's: converters that keep only
/// float tensors drop it), with the module's own count; every other entry
/// stays strict.
#[test]
fn a_missing_batch_count_keeps_the_modules_own() {
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    for seed in 0..2 {
        let x = common::Rng(seed).normals(12, 1.0, 2.0);
        bn.forward(&Tensor::from_slice(&ctx, &x, &[4, 3]).expect("x"))
            .expect("train");
    }
    let mut sd = bn.state_dict().expect("sd");
    sd.running_mean = Some(vec![0.5; 3]);
    sd.num_batches_tracked = None;
    bn.load_state_dict(&sd).expect("no count");
    assert_eq!(bn.num_batches_tracked(), 2);
    assert_eq!(bn.running_mean().expect("rm"), Some(vec![0.5; 3]));
    // The file without the key: the count stays the loading module's.
    let bytes = bn
        .state_dict()
        .expect("sd")
        .to_safetensors("bn.")
        .expect("save");
    let st = SafeTensors::deserialize(&bytes).expect("file");
    let kept: Vec<_> = (st.tensors().into_iter())
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    let without = safetensors::serialize(kept, None).expect("rewrite");
    let read = wgpu_batchnorm::StateDict::from_safetensors(&without, "bn.", true, true)
        .expect("read without the count");
    assert_eq!(read.num_batches_tracked, None);
    // Such a layer is still found in a model file, and loaded.
    assert_eq!(
        batch_norm_prefixes(&without).expect("prefixes"),
        vec!["bn.".to_string()]
    );
    let path = std::env::temp_dir().join(format!("bn-no-count-{}.safetensors", std::process::id()));
    std::fs::write(&path, &without).expect("write");
    let layers = load_batch_norms(&ctx, &path, |_| Some((Rank::D1, BatchNormConfig::new(0))));
    let _ = std::fs::remove_file(&path);
    assert!(layers.expect("load").contains_key("bn."));
    let mut fresh = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    fresh.load_state_dict(&read).expect("load");
    assert_eq!(fresh.num_batches_tracked(), 0);
    assert_eq!(fresh.running_mean().expect("rm"), Some(vec![0.5; 3]));
    // Still strict: a missing running_var, or a count the module lacks.
    let mut short = read.clone();
    short.running_var = None;
    assert!(fresh.load_state_dict(&short).is_err());
    let plain_cfg = BatchNormConfig::new(3).track_running_stats(false);
    let mut plain = BatchNorm1d::new(&ctx, plain_cfg).expect("bn");
    let mut counted = plain.state_dict().expect("sd");
    counted.num_batches_tracked = Some(1);
    assert!(plain.load_state_dict(&counted).is_err());
}
