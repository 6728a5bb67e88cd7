//! Fitting the Rust ecosystem: checkpoints of every float dtype and whole
//! model files written by torch itself, tensor views and refills, error
//! texts a newcomer can act on, serde and tracing behind their features.

// Parts need the default features; without them the helpers go unused.
#![cfg_attr(not(feature = "safetensors"), allow(unused))]

mod common;

use wgpu_batchnorm::{
    BatchNorm1d, BatchNormConfig, ContextOptions, Error, GpuContext, MemoryFormat, Tensor,
};

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[cfg(feature = "safetensors")]
mod checkpoints {
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
        fn view(
            bytes: &[u8],
            dtype: Dtype,
            shape: Vec<usize>,
        ) -> safetensors::tensor::TensorView<'_> {
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
}

#[test]
fn reshape_is_a_view_and_refills_do_not_allocate() {
    let Some(ctx) = common::context() else { return };
    let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let t = Tensor::from_slice(&ctx, &v, &[2, 3, 2, 2]).expect("t");
    let flat = t.reshape(&[2, 3, 4]).expect("reshape");
    assert_eq!(flat.buffer(), t.buffer(), "same buffer");
    assert_eq!(flat.to_vec().expect("read"), v);
    assert!(matches!(
        t.reshape(&[5, 5]),
        Err(Error::ShapeMismatch { .. })
    ));
    // Channels-last views keep N and C.
    let cl = t.with_memory_format(MemoryFormat::ChannelsLast);
    cl.reshape(&[2, 3, 4]).expect("merge spatial dims");
    assert!(cl.reshape(&[6, 4]).is_err());
    // A refill reuses the buffer.
    let before = ctx.live_buffers();
    let w: Vec<f32> = v.iter().map(|x| -x).collect();
    t.write_from_slice(&w).expect("refill");
    assert_eq!(ctx.live_buffers(), before);
    assert_eq!(flat.to_vec().expect("read"), w, "views see the refill");
    assert!(matches!(
        t.write_from_slice(&w[1..]),
        Err(Error::LengthMismatch { .. })
    ));
}

#[cfg(feature = "f16")]
#[test]
fn f16_uploads_refills_and_read_backs_mirror_f32() {
    let Some(ctx) = common::context() else { return };
    let h: Vec<half::f16> = [1.5f32, -2.25, 3.0, 0.5, 7.0]
        .iter()
        .map(|&v| half::f16::from_f32(v))
        .collect();
    let t = Tensor::from_f16(&ctx, &h, &[5]).expect("upload");
    assert_eq!(t.to_vec_f16().expect("read"), h);
    let h2: Vec<half::f16> = h.iter().map(|v| -*v).collect();
    t.write_from_f16(&h2).expect("refill");
    assert_eq!(pollster::block_on(t.to_vec_f16_async()).expect("async"), h2);
    assert!(matches!(
        t.write_from_slice(&[0.0; 5]),
        Err(Error::DTypeMismatch { .. })
    ));
    let f = Tensor::zeros(&ctx, &[5]).expect("f32");
    assert!(matches!(
        f.write_from_f16(&h),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(f.to_vec_f16(), Err(Error::DTypeMismatch { .. })));
}

/// Refilling an f16 tensor that wraps part of an application's buffer never
/// touches the bytes after it: an odd count (the last 4-byte word would
/// spill into the app's next value) is an `Err`, an even count writes
/// exactly its values.
#[cfg(feature = "f16")]
#[test]
fn f16_refills_of_app_buffers_stay_inside_the_tensor() {
    use wgpu_batchnorm::{wgpu, DType};
    let Some(ctx) = common::context() else { return };
    let app = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test/app-f16"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let all = Tensor::from_buffer_of(&ctx, app.clone(), 0, &[8], DType::F16).expect("all");
    let ones = vec![half::f16::ONE; 8];
    all.write_from_f16(&ones).expect("fill");
    let twos = vec![half::f16::from_f32(2.0); 4];
    let odd = Tensor::from_buffer_of(&ctx, app.clone(), 0, &[3], DType::F16).expect("odd");
    assert!(matches!(
        odd.write_from_f16(&twos[..3]),
        Err(Error::Misaligned { .. })
    ));
    assert_eq!(all.to_vec_f16().expect("read"), ones, "nothing written");
    let even = Tensor::from_buffer_of(&ctx, app, 0, &[4], DType::F16).expect("even");
    even.write_from_f16(&twos).expect("even refill");
    let got: Vec<f32> = all.to_vec().expect("read");
    assert_eq!(got, [2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]);
    // Tensors the library allocates own their padding: odd counts refill.
    let own = Tensor::from_f16(&ctx, &ones[..3], &[3]).expect("own");
    own.write_from_f16(&twos[..3])
        .expect("odd refill of our own tensor");
    assert_eq!(own.to_vec().expect("read"), [2.0; 3]);
}

/// Without an adapter the error names the backends tried and what to
/// install; it reads well with `Display`.
#[test]
fn no_adapter_error_says_what_to_do() {
    let opts = ContextOptions {
        backends: wgpu_batchnorm::wgpu::Backends::empty(),
        ..ContextOptions::default()
    };
    let err = GpuContext::with_options(opts).expect_err("no backends");
    let text = err.to_string();
    assert!(matches!(err, Error::NoAdapter { .. }), "{err:?}");
    assert!(text.contains("backends tried: none"), "{text}");
    assert!(
        text.contains("apt-get install -y mesa-vulkan-drivers"),
        "{text}"
    );
    assert!(text.contains("WGPU_BACKEND=gl"), "{text}");
    // Only backends this build has are named as tried (no Metal or DX12
    // on Linux).
    #[cfg(target_os = "linux")]
    {
        let opts = ContextOptions {
            backends: wgpu_batchnorm::wgpu::Backends::METAL | wgpu_batchnorm::wgpu::Backends::DX12,
            ..ContextOptions::default()
        };
        let text = GpuContext::with_options(opts)
            .expect_err("none built")
            .to_string();
        assert!(text.contains("backends tried: none"), "{text}");
    }
}

#[cfg(feature = "serde")]
#[test]
fn serde_round_trips_config_state_and_shards() {
    use wgpu_batchnorm::{ShardMoments, StateDict};
    let cfg = BatchNormConfig::new(3).eps(1e-3).momentum(None);
    let json = serde_json::to_string(&cfg).expect("ser");
    assert_eq!(
        serde_json::from_str::<BatchNormConfig>(&json).expect("de"),
        cfg
    );
    let sd = StateDict {
        weight: Some(vec![1.0, 2.0]),
        running_mean: Some(vec![0.5, 0.25]),
        num_batches_tracked: Some(7),
        ..Default::default()
    };
    let json = serde_json::to_string(&sd).expect("ser");
    assert_eq!(serde_json::from_str::<StateDict>(&json).expect("de"), sd);
    // A state dict written without the dtype (older files) reads as F32.
    let old = r#"{"weight":[1.0],"bias":null,"running_mean":null,"running_var":null,"num_batches_tracked":3}"#;
    let read = serde_json::from_str::<StateDict>(old).expect("no dtype");
    assert_eq!(read.dtype, wgpu_batchnorm::FloatDtype::F32);
    assert_eq!(read.num_batches_tracked, Some(3));
    let m = ShardMoments {
        count: 4,
        mean: vec![1.0],
        m2: vec![2.0],
    };
    let json = serde_json::to_string(&m).expect("ser");
    assert_eq!(serde_json::from_str::<ShardMoments>(&json).expect("de"), m);
}

/// `ContextOptions::features` asks for the app's own features where the
/// adapter has them (timestamps, to time `encode_forward`), and skips
/// those it lacks instead of failing; batch norm works either way.
#[test]
fn extra_features_are_requested_where_the_adapter_has_them() {
    let Some(plain) = common::context() else {
        return;
    };
    let stamps = wgpu_batchnorm::wgpu::Features::TIMESTAMP_QUERY
        | wgpu_batchnorm::wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
    // A compressed texture format no CPU or desktop adapter here offers
    // with the timestamps: asked for, skipped where absent.
    let rare = wgpu_batchnorm::wgpu::Features::TEXTURE_COMPRESSION_ASTC_HDR;
    let opts = ContextOptions {
        features: stamps | rare,
        ..common::options()
    };
    let ctx = GpuContext::with_options(opts).expect("context with extra features");
    let had = ctx.device().features();
    // Nothing beyond the library's own features unless asked for.
    assert!(!plain.device().features().intersects(stamps | rare));
    // Every subset of what was asked for is honoured where offered;
    // lavapipe (CI's adapter) offers the timestamps.
    let info = ctx.adapter_info().expect("info");
    if info.backend == wgpu_batchnorm::wgpu::Backend::Vulkan
        && info.device_type == wgpu_batchnorm::wgpu::DeviceType::Cpu
    {
        assert!(had.contains(stamps), "{had:?}");
    }
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(2)).expect("bn");
    let x = Tensor::from_slice(&ctx, &[1.0, 2.0, 3.0, 4.0], &[2, 2]).expect("x");
    let y = bn.forward(&x).expect("forward").to_vec().expect("read");
    for (got, want) in y.iter().zip([-1.0f32, -1.0, 1.0, 1.0]) {
        assert!((got - want).abs() < 1e-4, "{y:?}");
    }
}
