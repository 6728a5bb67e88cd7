// Entry points of the reductions that combine a workgroup's threads with a
// shared-memory tree only (every adapter). reduce_subgroup.wgsl is the
// variant for adapters with subgroup operations.

@compute @workgroup_size(WG)
fn moments_partial(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = slot_of(li, linear_group(wid, nwg));
    tree_reduce(li, s, moments_acc(s, 1u), true);
}

@compute @workgroup_size(WG)
fn moments_partial4(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = slot_of(li, linear_group(wid, nwg));
    tree_reduce(li, s, moments_acc(s, 4u), true);
}

@compute @workgroup_size(WG)
fn grads_partial(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = slot_of(li, linear_group(wid, nwg));
    tree_reduce(li, s, grads_acc(s, 1u), false);
}

@compute @workgroup_size(WG)
fn grads_partial4(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = slot_of(li, linear_group(wid, nwg));
    tree_reduce(li, s, grads_acc(s, 4u), false);
}
