// Storage element type of the kernels' tensors: f32. Prepended to every
// kernel module of the f32 pipeline set (accumulation is always f32).
alias elem = f32;
