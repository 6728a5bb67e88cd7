// Entry points of the reductions for adapters with subgroup operations
// (compiled only for devices with Features::SUBGROUP).
//
// When one channel owns the whole workgroup (cpw == 1, the (N, C, L)
// layout) and the subgroup size is fixed, each subgroup first combines its lanes with subgroupAdd —
// moments through Chan's formula in summed form: n = sum n_i,
// mean = sum n_i * mean_i / n, M2 = sum (M2_i + n_i * (mean_i - mean)^2) —
// and a short tree over the subgroups' results finishes. Otherwise (several
// channels per workgroup) the shared-memory tree runs, as on adapters
// without subgroups. Both give the same statistics up to rounding order,
// and each is deterministic for a given adapter.

fn subgroup_combine(v: vec4<f32>, moments: bool) -> vec4<f32> {
    if (!moments) {
        return subgroupAdd(v);
    }
    let n = subgroupAdd(v.x);
    let weighted = subgroupAdd(v.x * v.y);
    let mean = select(0.0, weighted / n, n > 0.0);
    let d = v.y - mean;
    let m2 = subgroupAdd(v.z + v.x * d * d);
    return vec4<f32>(n, mean, m2, subgroupAdd(v.w));
}

// P.subgroups is the number of subgroups per workgroup, set by the host
// when one channel owns the workgroup and the adapter's subgroup size is
// fixed (0 otherwise), so every barrier stays in uniform control flow.
fn subgroup_reduce(li: u32, s: Slot, v: vec4<f32>, moments: bool, sg: u32, lane: u32) {
    if (THREAD_PARTIALS || P.subgroups == 0u) {
        tree_reduce(li, s, v, moments);
        return;
    }
    let r = subgroup_combine(v, moments);
    if (lane == 0u) {
        scratch[sg] = r;
    }
    workgroupBarrier();
    var stride = P.subgroups / 2u;
    loop {
        if (stride == 0u) {
            break;
        }
        if (li < stride) {
            scratch[li] = merge(scratch[li], scratch[li + stride], moments);
        }
        workgroupBarrier();
        stride = stride / 2u;
    }
    if (li == 0u && s.valid) {
        write_partial(s, scratch[0]);
    }
}

@compute @workgroup_size(WG)
fn moments_partial(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let s = slot_of(li, linear_group(wid, nwg));
    subgroup_reduce(li, s, moments_acc(s, 1u), true, sg, lane);
}

@compute @workgroup_size(WG)
fn moments_partial4(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let s = slot_of(li, linear_group(wid, nwg));
    subgroup_reduce(li, s, moments_acc(s, 4u), true, sg, lane);
}

@compute @workgroup_size(WG)
fn grads_partial(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let s = slot_of(li, linear_group(wid, nwg));
    subgroup_reduce(li, s, grads_acc(s, 1u), false, sg, lane);
}

@compute @workgroup_size(WG)
fn grads_partial4(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let s = slot_of(li, linear_group(wid, nwg));
    subgroup_reduce(li, s, grads_acc(s, 4u), false, sg, lane);
}
