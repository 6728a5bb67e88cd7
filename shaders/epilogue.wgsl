// The fused epilogue the normalize kernels apply before storing:
//   y = act(normalized + residual)
// with the residual add and the ReLU only under the EPILOGUE pipeline
// constant's bits (0: plain batch norm; the epilogue code is then dead and
// compiled out). The output and residual bindings are views of their
// kernels: vec4s (store4.wgsl) or single values (columns.wgsl).

// Pipeline constant: EPILOGUE_* bits.
override EPILOGUE: u32 = 0u;
const EPILOGUE_RESIDUAL: u32 = 1u;
const EPILOGUE_RELU: u32 = 2u;

// ReLU as PyTorch: negative values to 0, NaN stays NaN (and -0 stays -0).
// Decided on the bits: llvmpipe's GL compiled `select(v, 0, v < 0)` into a
// max that made NaN 0.
fn relu(v: vec4<f32>) -> vec4<f32> {
    let below = below_zero(v) & (bitcast<vec4<u32>>(v) != vec4<u32>(0x80000000u));
    return select(v, vec4<f32>(0.0), below);
}

// Where ReLU's backward stops the gradient: an output <= 0 (+-0 or below;
// NaN passes, as PyTorch's threshold_backward), on the bits as `relu`.
fn relu_stops(y: vec4<f32>) -> vec4<bool> {
    return below_zero(y) | ((bitcast<vec4<u32>>(y) & vec4<u32>(0x7fffffffu)) == vec4<u32>(0u));
}

// The sign bit set and not NaN (-0 included).
fn below_zero(v: vec4<f32>) -> vec4<bool> {
    let b = bitcast<vec4<u32>>(v);
    let negative = (b >> vec4<u32>(31u)) == vec4<u32>(1u);
    return negative & ((b & vec4<u32>(0x7fffffffu)) <= vec4<u32>(0x7f800000u));
}

// The epilogue of normalized values v with their residual r (read only
// with EPILOGUE_RESIDUAL).
fn epilogue_of(v: vec4<f32>, r: vec4<f32>) -> vec4<f32> {
    var y = v;
    if ((EPILOGUE & EPILOGUE_RESIDUAL) != 0u) {
        y += r;
    }
    if ((EPILOGUE & EPILOGUE_RELU) != 0u) {
        y = relu(y);
    }
    return y;
}
