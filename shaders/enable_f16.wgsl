// Enables f16 (adapters with Features::SHADER_F16); put first in every
// module of the f16 pipeline set.
enable f16;
