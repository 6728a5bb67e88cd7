// The per-channel shifts where the input's first row (n = 0) is longer
// than one storage binding (ExecPlan::gathers_heads): the `head` binding
// (common.wgsl) cannot hold it, so gather_heads copies channel ch's first
// value x[ch * L] from the chunk that holds it into heads[ch], one
// dispatch per chunk of the first row (P.lead: the chunk's start within
// it; P.numel: its length). The kernels that take the shift then bind
// `heads` as `head` with FLAG_GATHERED_HEADS, and shift_of (moments.wgsl)
// reads head[ch]. Without it, channels past the first binding took a
// shift of 0: data such as 1e7 + noise lost its statistics to f32
// rounding.
@group(0) @binding(14) var<storage, read_write> heads: array<elem>;

@compute @workgroup_size(WG)
fn gather_heads(ids: Ids) {
    let ch = global_index(ids);
    if (ch >= P().c) {
        return;
    }
    let i = ch * P().l;
    if (i < P().lead || i - P().lead >= P().numel) {
        return;
    }
    let e = i - P().lead;
    heads[ch] = x4[e / 4u][e % 4u];
}
