// Baseline for the benchmarks: a plain vec4 copy, read N floats and write N
// floats. Batch-norm timings are reported as multiples of this kernel's time
// on the same adapter. Standalone (no prelude); WG matches common.wgsl.

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn copy(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * WG + li;
    if (i < arrayLength(&dst)) {
        dst[i] = src[i];
    }
}
