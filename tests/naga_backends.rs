//! Every WGSL module the crate compiles is parsed and validated with naga
//! (the version wgpu uses) and translated to SPIR-V (Vulkan), MSL (Metal),
//! HLSL (DX12) and GLSL ES 3.10 (wgpu's GL compute target), entry point by
//! entry point. Any back end rejecting a shader fails with naga's error.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_batchnorm::kernels::sources;

fn compile(name: &str, source: &str, f16: bool, subgroups: bool) -> Result<usize, String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: WGSL parse error:\n{}", e.emit_to_string(source)))?;
    let mut caps = Capabilities::default();
    if f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("{name}: validation error:\n{}", e.emit_to_string(source)))?;
    let mut entries = 0;
    // Pipeline constants as the library sets them: reduce.wgsl's
    // THREAD_PARTIALS both ways.
    let variants: Vec<Option<f64>> = if module.overrides.is_empty() {
        vec![None]
    } else {
        vec![Some(0.0), Some(1.0)]
    };
    for ep in &module.entry_points {
        let stage = ep.stage;
        for variant in &variants {
            let mut constants = naga::back::PipelineConstants::default();
            if let Some(v) = variant {
                constants.insert("THREAD_PARTIALS".to_string(), *v);
            }
            let at = format!("{name}::{} (THREAD_PARTIALS {variant:?})", ep.name);
            let (module, info) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((stage, &ep.name)),
                &constants,
            )
            .map_err(|e| format!("{at}: overrides: {e:?}"))?;
            translate(&at, &module, &info, stage, &ep.name, f16, subgroups)?;
        }
        entries += 1;
    }
    Ok(entries)
}

#[test]
fn every_shader_translates_to_every_backend() {
    let mut failures = Vec::new();
    let mut entries = 0;
    for (name, dtype, subgroups, source) in sources::modules() {
        let f16 = dtype == Some(wgpu_batchnorm::DType::F16);
        match compile(name, &source, f16, subgroups) {
            Ok(n) => entries += n,
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // per dtype (f32, f16): reduce 6 (tree) + 6 (subgroups; the two rows
    // kernels are shared), finalize 6, elementwise 6; copy 1
    assert_eq!(entries, 2 * 24 + 1);
}

#[test]
fn every_wgsl_file_is_covered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let all: String = sources::modules()
        .into_iter()
        .map(|(_, _, _, s)| s)
        .collect();
    for entry in std::fs::read_dir(dir).expect("shaders dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("wgsl") {
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(
                all.contains(text.trim()),
                "{} is not compiled by any module",
                path.display()
            );
        }
    }
}

#[test]
fn a_broken_shader_is_reported() {
    let broken = format!(
        "{}\nfn oops() -> f32 {{ return undefined_name; }}",
        sources::COMMON
    );
    assert!(compile("broken", &broken, false, false).is_err());
}

/// Writes one entry point of a module (overrides already applied) with
/// every back end.
fn translate(
    at: &str,
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    stage: naga::ShaderStage,
    entry: &str,
    f16: bool,
    subgroups: bool,
) -> Result<(), String> {
    spv::write_vec(
        module,
        info,
        &spv::Options::default(),
        Some(&spv::PipelineOptions {
            shader_stage: stage,
            entry_point: entry.to_string(),
        }),
    )
    .map_err(|e| format!("{at}: SPIR-V: {e:?}"))?;
    msl::write_string(
        module,
        info,
        &msl::Options::default(),
        &msl::PipelineOptions {
            entry_point: Some((stage, entry.to_string())),
            ..Default::default()
        },
    )
    .map_err(|e| format!("{at}: MSL: {e:?}"))?;
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((stage, entry.to_string())),
    };
    // f16 needs shader model 6.2 (DXC), as wgpu's DX12 backend uses.
    let hlsl_options = hlsl::Options {
        shader_model: if f16 || subgroups {
            hlsl::ShaderModel::V6_2
        } else {
            hlsl::Options::default().shader_model
        },
        ..Default::default()
    };
    let mut hlsl_out = String::new();
    hlsl::Writer::new(&mut hlsl_out, &hlsl_options, &hlsl_pipeline)
        .write(module, info, None)
        .map_err(|e| format!("{at}: HLSL: {e:?}"))?;
    if f16 || subgroups {
        // wgpu's GL backend gets neither SHADER_F16 nor SUBGROUP: the
        // library returns Error::Unsupported for f16 there and uses the
        // tree reductions.
        return Ok(());
    }
    let mut glsl_out = String::new();
    let glsl_options = glsl::Options {
        version: glsl::Version::new_gles(310),
        ..Default::default()
    };
    let glsl_pipeline = glsl::PipelineOptions {
        shader_stage: stage,
        entry_point: entry.to_string(),
        multiview: None,
    };
    glsl::Writer::new(
        &mut glsl_out,
        module,
        info,
        &glsl_options,
        &glsl_pipeline,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .and_then(|mut w| w.write())
    .map_err(|e| format!("{at}: GLSL: {e:?}"))?;
    Ok(())
}
