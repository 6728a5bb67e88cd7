//! The GPU layer: context and device, buffers and tensors, shader assembly,
//! the pipeline cache, pure launch planning, and typed kernel launches.
//! Nothing here knows batch-norm semantics beyond the kernels' contracts.

pub(crate) mod bind_cache;
pub(crate) mod binding;
pub(crate) mod buffer;
pub(crate) mod context;
pub(crate) mod driver_lock;
pub(crate) mod instance;
pub(crate) mod launch;
pub(crate) mod options;
pub(crate) mod params;
pub(crate) mod pipelines;
pub(crate) mod plan;
pub(crate) mod poller;
pub(crate) mod readback;
pub(crate) mod scope;
pub(crate) mod shaders;
pub(crate) mod steps;
pub(crate) mod storage;
pub(crate) mod tensor;
mod tensor_io;
