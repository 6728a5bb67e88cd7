// Entry points of the reductions for adapters with subgroup operations
// (compiled only for devices with Features::SUBGROUP).
//
// When one channel owns the whole workgroup (lanes_per_group == 1, the
// (N, C, L) layout on GPUs) and the subgroup size is fixed, each subgroup first
// combines its invocations with subgroupAdd —
// moments through Chan's formula in summed form: n = sum n_i,
// mean = sum n_i * mean_i / n, M2 = sum (M2_i + n_i * (mean_i - mean)^2) —
// and a short tree over the subgroups' results finishes. Otherwise (several
// channels per workgroup) the shared-memory tree runs, as on adapters
// without subgroups. Both give the same statistics up to rounding order,
// and each is deterministic for a given adapter.

// Subgroup builtins of the entry points here.
struct SubgroupIds {
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

// The subgroup's states combined: moment states aligned to the largest
// exponent first (see moments.wgsl), poison classes added up.
fn subgroup_combine(v: vec4<f32>, moments: bool) -> vec4<f32> {
    if (!moments) {
        return subgroupAdd(v);
    }
    let poison = subgroupAdd(select(0.0, v.w, !is_finite(v.w)));
    let e0 = subgroupMax(select(0.0, v.w, is_finite(v.w)));
    let e = exponent_for(e0, subgroupMax(abs(rescaled(v, e0).y)));
    let r = rescaled(v, e);
    let n = subgroupAdd(r.x);
    let weighted = subgroupAdd(r.x * r.y);
    let mean = select(0.0, weighted / n, n > 0.0);
    let d = r.y - mean;
    let m2 = subgroupAdd(r.z + r.x * d * d);
    return vec4<f32>(n, mean, m2, select(e, poison, !is_finite(poison)));
}

// P.subgroups is the number of subgroups per workgroup, set by the host
// when one channel owns the workgroup and the adapter's subgroup size is
// fixed (0 otherwise), so every barrier stays in uniform control flow.
fn subgroup_reduce(li: u32, s: Share, v: vec4<f32>, moments: bool, sgi: SubgroupIds) {
    if (THREAD_PARTIALS || P().subgroups == 0u) {
        tree_reduce(li, s, v, moments);
        return;
    }
    let r = subgroup_combine(v, moments);
    if (sgi.lane == 0u) {
        scratch[sgi.sg] = r;
    }
    workgroupBarrier();
    var stride = P().subgroups / 2u;
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
fn moments_partial(ids: Ids, sgi: SubgroupIds) {
    let s = share_of(ids.li, group_index(ids));
    subgroup_reduce(ids.li, s, moments_acc(s, WIDTH), true, sgi);
}

@compute @workgroup_size(WG)
fn grads_partial(ids: Ids, sgi: SubgroupIds) {
    let s = share_of(ids.li, group_index(ids));
    subgroup_reduce(ids.li, s, grads_acc(s, WIDTH), false, sgi);
}
