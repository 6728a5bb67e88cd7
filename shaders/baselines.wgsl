// Baselines for the benchmarks, standalone (no prelude; WG matches
// common.wgsl): a plain vec4 copy (read N floats, write N floats), which
// every batch-norm timing is reported against, and the separate add and
// ReLU passes that the fused epilogue replaces, and the read-only
// reduction passes that make up the floors of training (sum, then copy) and
// backward (sum2, then add).

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> other: array<vec4<f32>>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + li;
}

@compute @workgroup_size(WG)
fn copy(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = index(wid, nwg, li);
    if (i < arrayLength(&dst)) {
        dst[i] = src[i];
    }
}

// dst = src + other
@compute @workgroup_size(WG)
fn add(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = index(wid, nwg, li);
    if (i < arrayLength(&dst)) {
        dst[i] = src[i] + other[i];
    }
}

// dst = max(src, 0)
@compute @workgroup_size(WG)
fn relu(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = index(wid, nwg, li);
    if (i < arrayLength(&dst)) {
        dst[i] = max(src[i], vec4<f32>(0.0));
    }
}

// Reads src once (grid-stride, coalesced) and writes one vec4 sum per
// thread: the read-only pass of a reduction at the memory floor.
@compute @workgroup_size(WG)
fn sum(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = index(wid, nwg, li);
    let threads = nwg.x * nwg.y * WG;
    var acc = vec4<f32>(0.0);
    for (var j = i; j < arrayLength(&src); j += threads) {
        acc += src[j];
    }
    dst[i] = acc;
}

// The same over src and other together (the backward's reduction reads
// x and dy).
@compute @workgroup_size(WG)
fn sum2(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = index(wid, nwg, li);
    let threads = nwg.x * nwg.y * WG;
    var acc = vec4<f32>(0.0);
    for (var j = i; j < arrayLength(&src); j += threads) {
        acc += src[j] * other[j];
    }
    dst[i] = acc;
}
