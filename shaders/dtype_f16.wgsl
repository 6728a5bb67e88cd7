// Storage element type of the kernels' tensors: f16 (needs SHADER_F16;
// enable_f16.wgsl goes first in the module). Values are widened to f32 on
// load, so statistics accumulate in f32.
alias elem = f16;
