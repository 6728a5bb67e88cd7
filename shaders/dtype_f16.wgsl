// Storage element type of the kernels' tensors: f16 (needs SHADER_F16).
// Prepended to every kernel module of the f16 pipeline set; values are
// widened to f32 on load, so statistics accumulate in f32.
enable f16;
alias elem = f16;
