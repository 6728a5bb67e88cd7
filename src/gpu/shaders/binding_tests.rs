//! The bindings the modules declare: each binding index once per module,
//! and no more storage buffers per column kernel than the planner assumes.

use super::tests::{modules, parse};
use super::*;
use crate::gpu::plan;
use naga::valid::Capabilities;

/// The column strategy is chosen only where the device has as many
/// storage buffers per stage as the column kernel that binds the most.
#[test]
fn column_kernels_bind_at_most_the_storage_buffers_the_planner_assumes() {
    for family in [Family::Columns, Family::Columns4, Family::Columns4Odd] {
        let source = module_source(family, DType::F32);
        let (module, info) = parse("columns", &source, Capabilities::default()).expect("parse");
        for (i, ep) in module.entry_points.iter().enumerate() {
            let uses = info.get_entry_point(i);
            let storage = module
                .global_variables
                .iter()
                .filter(|(h, g)| {
                    matches!(g.space, naga::AddressSpace::Storage { .. }) && !uses[*h].is_empty()
                })
                .count() as u32;
            assert!(
                storage <= plan::strategy::COLUMN_STORAGE_BUFFERS,
                "{} binds {storage} storage buffers",
                ep.name
            );
        }
    }
}

/// No module declares two globals at one binding: WGSL allows it where no
/// entry point uses both, but naga's HLSL writer keeps unused globals, so
/// DX12 would see two buffers on one register.
#[test]
fn every_binding_is_declared_once_per_module() {
    for (name, dtype, source) in modules() {
        let caps = if dtype == DType::F32 {
            Capabilities::default()
        } else {
            Capabilities::SHADER_FLOAT16
        };
        let caps = caps | Capabilities::SUBGROUP;
        let (module, _) = parse(&name, &source, caps).expect("parse");
        let mut seen = std::collections::HashMap::new();
        for (_, g) in module.global_variables.iter() {
            if let Some(b) = &g.binding {
                let key = (b.group, b.binding);
                if let Some(other) = seen.insert(key, g.name.clone()) {
                    panic!("{name}: {other:?} and {:?} at {key:?}", g.name);
                }
            }
        }
    }
}
