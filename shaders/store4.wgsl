// The vec4 output of the elementwise and four-channel column kernels
// (elementwise.wgsl, columns4.wgsl), through the epilogue (epilogue.wgsl).

@group(0) @binding(6) var<storage, read_write> out: array<vec4<elem>>;
// The residual added before the activation (bound to x itself when the
// pipeline adds none).
@group(0) @binding(12) var<storage, read> residual4: array<vec4<elem>>;

fn store(i: u32, v: vec4<f32>) {
    out[i] = vec4<elem>(v);
}

// Stores a normalized vec4 through the epilogue.
fn store_normalized(i: u32, v: vec4<f32>) {
    var r = vec4<f32>(0.0);
    if ((EPILOGUE & EPILOGUE_RESIDUAL) != 0u) {
        r = vec4<f32>(residual4[i]);
    }
    store(i, epilogue_of(v, r));
}
