// Entry points of the reductions that combine a workgroup's threads with a
// shared-memory tree only (every adapter). reduce_subgroup.wgsl is the
// variant for adapters with subgroup operations. WIDTH (a pipeline
// constant) selects single values or vec4s along L.

@compute @workgroup_size(WG)
fn moments_partial(ids: Ids) {
    let s = share_of(ids.li, group_index(ids));
    tree_reduce(ids.li, s, moments_acc(s, WIDTH), true);
}

@compute @workgroup_size(WG)
fn grads_partial(ids: Ids) {
    let s = share_of(ids.li, group_index(ids));
    tree_reduce(ids.li, s, grads_acc(s, WIDTH), false);
}
