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
#[path = "ecosystem/checkpoints.rs"]
mod checkpoints;

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
