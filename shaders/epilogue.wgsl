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

// ReLU as PyTorch: negative values to 0, NaN stays NaN.
fn relu(v: vec4<f32>) -> vec4<f32> {
    return select(v, vec4<f32>(0.0), v < vec4<f32>(0.0));
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
