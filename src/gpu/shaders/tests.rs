//! Every WGSL module the crate compiles is parsed and validated with naga
//! (the version wgpu uses) and translated to SPIR-V (Vulkan), MSL (Metal),
//! HLSL (DX12) and GLSL ES 3.10 (wgpu's GL compute target), entry point by
//! entry point and pipeline-constant value by value. The constants and the
//! uniform block the WGSL declares are checked against the Rust side.

use super::*;
use crate::gpu::params::{self, Params};
use crate::gpu::plan;
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

const BASELINES: &str = include_str!("../../../shaders/baselines.wgsl");

pub(super) fn dtypes() -> Vec<DType> {
    vec![
        DType::F32,
        #[cfg(feature = "f16")]
        DType::F16,
    ]
}

/// Every module the library builds: `(label, dtype, source)`.
pub(super) fn modules() -> Vec<(String, DType, String)> {
    let mut all = Vec::new();
    for dtype in dtypes() {
        for family in Family::ALL {
            all.push((
                format!("{}-{}", family.name(), dtype.name()),
                dtype,
                module_source(family, dtype),
            ));
        }
    }
    all
}

pub(super) fn parse(
    name: &str,
    source: &str,
    caps: Capabilities,
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: WGSL parse error:\n{}", e.emit_to_string(source)))?;
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("{name}: validation error:\n{}", e.emit_to_string(source)))?;
    Ok((module, info))
}

/// Values the library gives each pipeline constant.
fn override_values(name: &str) -> Vec<f64> {
    match name {
        "THREAD_PARTIALS" => vec![0.0, 1.0],
        "WIDTH" => vec![1.0, 4.0],
        "MASKED" => vec![0.0, 1.0],
        "EPILOGUE" => vec![0.0, 1.0, 2.0, 3.0],
        "INLINE_RESCUE" => vec![0.0, 1.0],
        "COLUMN_WG" => vec![32.0, 64.0, 128.0, 256.0],
        _ => vec![],
    }
}

/// Every combination of the module's pipeline constants.
fn override_sets(module: &naga::Module) -> Vec<naga::back::PipelineConstants> {
    let mut sets = vec![naga::back::PipelineConstants::default()];
    for (_, o) in module.overrides.iter() {
        let Some(name) = &o.name else { continue };
        let mut next = Vec::new();
        for set in &sets {
            for v in override_values(name) {
                let mut s = set.clone();
                s.insert(name.clone(), v);
                next.push(s);
            }
        }
        assert!(!next.is_empty(), "no test values for override {name}");
        sets = next;
    }
    sets
}

fn compile(name: &str, source: &str, f16: bool, subgroups: bool) -> Result<usize, String> {
    let mut caps = Capabilities::default();
    if f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    let (module, info) = parse(name, source, caps)?;
    let mut entries = 0;
    for ep in &module.entry_points {
        for constants in override_sets(&module) {
            let at = format!("{name}::{} ({constants:?})", ep.name);
            let (m, i) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((ep.stage, &ep.name)),
                &constants,
            )
            .map_err(|e| format!("{at}: overrides: {e:?}"))?;
            translate(&at, &m, &i, ep.stage, &ep.name, f16, subgroups)?;
        }
        entries += 1;
    }
    Ok(entries)
}

#[test]
fn every_shader_translates_to_every_backend() {
    let mut failures = Vec::new();
    let mut entries = 0;
    let mut modules = modules();
    modules.push(("baselines".into(), DType::F32, BASELINES.to_string()));
    for (name, dtype, source) in modules {
        let subgroups = name.starts_with("reduce-subgroup");
        match compile(&name, &source, dtype != DType::F32, subgroups) {
            Ok(n) => entries += n,
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Per dtype: every entry point of the seven families (reduce tree and
    // subgroups, finalize, elementwise, columns, columns4 and its odd-C
    // form; finalize.wgsl's twice: in the finalize and columns modules;
    // the finalize module's rescue.wgsl and heads.wgsl; the columns
    // module's backward_columns_rescue; the columns4 module's
    // *_regs64_lanes and *_regs16_lanes, which its odd-C form has not);
    // then the five baseline kernels.
    assert_eq!(entries, dtypes().len() * 77 + 5);
}

#[test]
fn every_wgsl_file_is_covered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut all: String = modules().into_iter().map(|(_, _, s)| s).collect();
    all.push_str(BASELINES);
    all.push_str(include_str!("../../../shaders/dtype_f16.wgsl"));
    all.push_str(include_str!("../../../shaders/enable_f16.wgsl"));
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
    let broken = format!("{COMMON}\nfn oops() -> f32 {{ return undefined_name; }}");
    assert!(compile("broken", &broken, false, false).is_err());
}

/// The value of the WGSL `const name: u32`.
fn wgsl_u32(module: &naga::Module, name: &str) -> u32 {
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no WGSL constant {name}"));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn shared_constants_agree_with_the_rust_side() {
    let source = module_source(Family::Elementwise, DType::F32);
    let (module, _) = parse("elementwise", &source, Capabilities::default()).expect("parse");
    assert_eq!(wgsl_u32(&module, "WG"), plan::WG);
    assert_eq!(wgsl_u32(&module, "SLAB") as usize, plan::SLAB);
    assert_eq!(
        wgsl_u32(&module, "REG_ROWS_64") as usize,
        plan::strategy::COLUMN_REGS_64
    );
    let source = module_source(Family::ReduceTree, DType::F32);
    let (reduce, _) = parse("reduce", &source, Capabilities::default()).expect("parse");
    assert_eq!(wgsl_u32(&reduce, "PAIR_GAP"), plan::PAIR_GAP);
    let source = module_source(Family::Columns4, DType::F32);
    let (columns4, _) = parse("columns4", &source, Capabilities::default()).expect("parse");
    assert_eq!(
        wgsl_u32(&columns4, "REG_ROWS") as usize,
        plan::strategy::COLUMN_SMALL_REG_ROWS
    );
    assert_eq!(
        wgsl_u32(&columns4, "REG_LANES_64") as usize,
        plan::strategy::COLUMN_REG_LANES_64
    );
    assert_eq!(
        wgsl_u32(&columns4, "REG_ROWS_16") as usize,
        plan::strategy::COLUMN_REGS_16
    );
    assert_eq!(
        wgsl_u32(&module, "REG_ROWS_256") as usize,
        plan::strategy::COLUMN_MAX_ROWS
    );
    assert_eq!(wgsl_u32(&module, "TERMS") as usize, params::TERMS);
    assert_eq!(
        wgsl_u32(&module, "FLAG_UPDATE_RUNNING"),
        params::FLAG_UPDATE_RUNNING
    );
    assert_eq!(wgsl_u32(&module, "FLAG_AFFINE"), params::FLAG_AFFINE);
    assert_eq!(
        wgsl_u32(&module, "FLAG_BATCH_STATS"),
        params::FLAG_BATCH_STATS
    );
    assert_eq!(
        wgsl_u32(&module, "FLAG_FROM_STATE"),
        params::FLAG_FROM_STATE
    );
    assert_eq!(
        wgsl_u32(&module, "FLAG_GATHERED_HEADS"),
        params::FLAG_GATHERED_HEADS
    );
    assert_eq!(
        wgsl_u32(&module, "FLAG_PAIRED_LANES"),
        params::FLAG_PAIRED_LANES
    );
    assert_eq!(
        wgsl_u32(&module, "FLAG_FIRST_CHUNK"),
        params::FLAG_FIRST_CHUNK
    );
    assert_eq!(
        wgsl_u32(&module, "EPILOGUE_RESIDUAL"),
        params::EPILOGUE_RESIDUAL
    );
    assert_eq!(wgsl_u32(&module, "EPILOGUE_RELU"), params::EPILOGUE_RELU);
    // The packed terms follow the TERMS sections: one vec4 per channel of
    // each kind, PACKED_GRAD the last.
    let kinds = wgsl_u32(&module, "PACKED_GRAD") as usize + 1;
    assert_eq!(params::TERM_FLOATS, params::TERMS + 4 * kinds);
    let (copy, _) = parse("baselines", BASELINES, Capabilities::default()).expect("parse");
    assert_eq!(wgsl_u32(&copy, "WG"), plan::WG);
}

#[test]
fn params_block_agrees_with_the_rust_struct() {
    use std::mem::offset_of;
    let rust = [
        ("n", offset_of!(Params, n)),
        ("c", offset_of!(Params, c)),
        ("l", offset_of!(Params, l)),
        ("count", offset_of!(Params, count)),
        ("numel", offset_of!(Params, numel)),
        ("lanes_per_group", offset_of!(Params, lanes_per_group)),
        ("threads_per_lane", offset_of!(Params, threads_per_lane)),
        ("tiles", offset_of!(Params, tiles)),
        ("segments", offset_of!(Params, segments)),
        ("seg_len", offset_of!(Params, seg_len)),
        ("flags", offset_of!(Params, flags)),
        ("partial_base", offset_of!(Params, partial_base)),
        ("eps", offset_of!(Params, eps)),
        ("momentum", offset_of!(Params, momentum)),
        ("lead", offset_of!(Params, lead)),
        ("subgroups", offset_of!(Params, subgroups)),
        ("stride", offset_of!(Params, stride)),
        ("units", offset_of!(Params, units)),
        ("partial_rows", offset_of!(Params, partial_rows)),
        ("column_lanes", offset_of!(Params, column_lanes)),
        ("folds", offset_of!(Params, folds)),
        ("rescue_flag", offset_of!(Params, rescue_flag)),
        ("rescue_windows", offset_of!(Params, rescue_windows)),
        ("rescue_window", offset_of!(Params, rescue_window)),
    ];
    let source = module_source(Family::Finalize, DType::F32);
    let (module, _) = parse("finalize", &source, Capabilities::default()).expect("parse");
    let (handle, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Params"))
        .expect("Params in WGSL");
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("Params is not a struct");
    };
    let wgsl: Vec<(String, usize)> = members
        .iter()
        .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
        .collect();
    let rust: Vec<(String, usize)> = rust.iter().map(|(n, o)| (n.to_string(), *o)).collect();
    assert_eq!(wgsl, rust);
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).expect("layout");
    assert_eq!(
        layouter[handle].size as usize,
        std::mem::size_of::<Params>()
    );
    assert_eq!(*span as u64, params::PARAMS_SIZE);
    // The binding's slots (P() in common.wgsl).
    let (_, slot) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("ParamsSlot"))
        .expect("ParamsSlot in WGSL");
    let naga::TypeInner::Struct { span, .. } = &slot.inner else {
        panic!("ParamsSlot is not a struct");
    };
    assert_eq!(*span as u64, params::PARAMS_SLOT);
    assert_eq!(params::PARAMS_BINDING, 2 * params::PARAMS_SLOT);
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
    // f16 and subgroups need shader model 6.2 (DXC), as wgpu's DX12 backend uses.
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
