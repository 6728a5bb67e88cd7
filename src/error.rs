//! The crate's single error type.
//!
//! Errors that mirror a PyTorch exception carry PyTorch's wording, so a
//! message such as `expected 2D or 3D input (got 1D input)` reads the same
//! in Rust as in Python.

/// Everything that can go wrong in `wgpu-batchnorm`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No wgpu adapter matched the request (or none exists on this machine).
    #[error("no suitable GPU adapter found: {0}")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("failed to create a GPU device: {0}")]
    RequestDevice(String),
    /// The device was lost (driver reset, `destroy`, ...); every later call fails.
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// wgpu reported a validation error for work this crate submitted.
    #[error("wgpu validation error: {0}")]
    Validation(String),
    /// The device ran out of memory.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    /// Reading a buffer back to the host failed.
    #[error("buffer read-back failed: {0}")]
    Readback(String),
    /// The input has the wrong rank; PyTorch raises `ValueError`.
    #[error("expected 2D or 3D input (got {0}D input)")]
    InvalidRank(usize),
    /// Training (or batch statistics) needs more than one value per channel;
    /// PyTorch raises `ValueError`.
    #[error(
        "Expected more than 1 value per channel when training, got input size torch.Size({0})"
    )]
    TooFewValues(String),
    /// A per-channel buffer does not match the input's channel count;
    /// PyTorch raises `RuntimeError`.
    #[error("{name} should contain {expected} elements not {actual}")]
    ChannelMismatch {
        /// The buffer PyTorch names (`running_mean`, `weight`, ...).
        name: &'static str,
        /// Channels of the input.
        expected: usize,
        /// Elements of the buffer.
        actual: usize,
    },
    /// Two shapes that must agree do not.
    #[error("shape mismatch: expected {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was given.
        actual: Vec<usize>,
    },
    /// A slice passed to a setter or constructor has the wrong length.
    #[error("{name}: expected {expected} values, got {actual}")]
    LengthMismatch {
        /// What was being set.
        name: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An invalid argument to a public function.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A tensor created on another [`GpuContext`](crate::GpuContext) was passed in.
    #[error("tensor belongs to a different GpuContext")]
    ContextMismatch,
    /// `backward` was called before any successful `forward`.
    #[error("backward called before forward: there is no forward pass to differentiate")]
    NoForward,
    /// The requested buffer is not kept by this module (for example running
    /// statistics with `track_running_stats = false`).
    #[error("{0} is not available: {1}")]
    NotAvailable(&'static str, &'static str),
    /// A checkpoint (state dict or `.safetensors` file) does not fit the module.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The device lacks a feature the call needs.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The tensor exceeds what this adapter can bind or address.
    #[error("tensor too large for this adapter: {0}")]
    TooLarge(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<wgpu::Error> for Error {
    fn from(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
            wgpu::Error::Validation { description, .. } => Error::Validation(description),
            wgpu::Error::Internal { description, .. } => Error::Validation(description),
        }
    }
}
