// The output of the normalize kernels (elementwise.wgsl, columns.wgsl) and
// the fused epilogue applied before it is stored:
//   y = act(normalized + residual)
// with the residual add and the ReLU only under the EPILOGUE pipeline
// constant's bits (0: plain batch norm; the epilogue code is then dead and
// compiled out).

@group(0) @binding(6) var<storage, read_write> out: array<vec4<elem>>;
// The residual added before the activation (bound to x itself when the
// pipeline adds none).
@group(0) @binding(12) var<storage, read> residual4: array<vec4<elem>>;

// Pipeline constant: EPILOGUE_* bits.
override EPILOGUE: u32 = 0u;
const EPILOGUE_RESIDUAL: u32 = 1u;
const EPILOGUE_RELU: u32 = 2u;

// ReLU as PyTorch: negative values to 0, NaN stays NaN.
fn relu(v: vec4<f32>) -> vec4<f32> {
    return select(v, vec4<f32>(0.0), v < vec4<f32>(0.0));
}

fn store(i: u32, v: vec4<f32>) {
    out[i] = vec4<elem>(v);
}

// Stores a normalized vec4 through the epilogue.
fn store_normalized(i: u32, v: vec4<f32>) {
    var r = v;
    if ((EPILOGUE & EPILOGUE_RESIDUAL) != 0u) {
        r += vec4<f32>(residual4[i]);
    }
    if ((EPILOGUE & EPILOGUE_RELU) != 0u) {
        r = relu(r);
    }
    store(i, r);
}

// Value e of the output through the epilogue: one component of its vec4
// (the one-channel-per-thread column kernels, columns.wgsl, store single
// values; neighbouring threads store the other components).
fn store_normalized1(e: u32, v: f32) {
    var r = v;
    if ((EPILOGUE & EPILOGUE_RESIDUAL) != 0u) {
        r += f32(residual4[e / 4u][e % 4u]);
    }
    if ((EPILOGUE & EPILOGUE_RELU) != 0u) {
        r = select(r, 0.0, r < 0.0);
    }
    store1(e, r);
}

// Value e of the output (one component of its vec4).
fn store1(e: u32, v: f32) {
    out[e / 4u][e % 4u] = elem(v);
}
