//! The crate's single error type.
//!
//! Errors that mirror a PyTorch exception carry PyTorch's wording, so a
//! message such as `expected 2D or 3D input (got 1D input)` reads the same
//! in Rust as in Python. Variants carry structured fields wherever a caller
//! may want to branch on them.

use crate::types::{DType, MemoryFormat};

/// Everything that can go wrong in `wgpu-batchnorm`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No wgpu adapter matched the request (or none exists on this machine).
    #[error(
        "no GPU adapter found (backends tried: {backends}): {detail}. {}",
        NO_ADAPTER_HINT
    )]
    NoAdapter {
        /// The backends that were searched, e.g. `"vulkan | gl"`.
        backends: String,
        /// What wgpu reported.
        detail: String,
    },
    /// An environment variable read by [`ContextOptions::from_env`](crate::ContextOptions::from_env)
    /// has a value the library does not know.
    #[error("{variable}={value:?} is not recognised; accepted values: {accepted}")]
    InvalidEnv {
        /// The variable (`WGPU_BACKEND`, `WGPU_POWER_PREF`).
        variable: &'static str,
        /// Its value.
        value: String,
        /// The values it accepts.
        accepted: &'static str,
    },
    /// The adapter refused to create a device.
    #[error("failed to create a GPU device: {0}")]
    RequestDevice(String),
    /// The device was lost (driver reset, `destroy`, ...); every later call fails.
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// wgpu reported a validation error for work this crate recorded.
    #[error("wgpu validation error: {0}")]
    Validation(String),
    /// A broken invariant of the library itself (a lock poisoned by a
    /// thread that panicked inside it): a bug to report, not a user error.
    #[error("internal error in wgpu-batchnorm: {0} (please report it)")]
    Internal(&'static str),
    /// wgpu reported an error for work outside this crate's calls (for
    /// example the application's own commands on a device made by
    /// [`GpuContext::new`](crate::GpuContext::new)); the next call of the
    /// library returns it once.
    #[error("wgpu error outside batch norm (reported by the device): {0}")]
    Uncaptured(String),
    /// The device ran out of memory.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    /// Reading a buffer back to the host failed.
    #[error("buffer read-back failed: {0}")]
    Readback(String),
    /// The input has the wrong rank; PyTorch raises `ValueError`.
    #[error("expected {expected} input (got {got}D input)")]
    InvalidRank {
        /// What the module accepts (`"2D or 3D"`, `"4D"`, `"5D"`).
        expected: &'static str,
        /// The input's number of dimensions.
        got: usize,
    },
    /// Training (or batch statistics) needs more than one value per channel;
    /// PyTorch raises `ValueError`.
    #[error(
        "Expected more than 1 value per channel when training, got input size torch.Size({})",
        torch_size(shape)
    )]
    TooFewValues {
        /// The input's shape.
        shape: Vec<usize>,
    },
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
    #[error("{what}: expected shape {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// The argument being checked.
        what: &'static str,
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
    /// A tensor has another element type than the call needs.
    #[error("{what}: expected dtype {expected:?}, got {actual:?}")]
    DTypeMismatch {
        /// The argument being checked.
        what: &'static str,
        /// The required dtype.
        expected: DType,
        /// The given dtype.
        actual: DType,
    },
    /// A tensor has another memory format than the call needs.
    #[error("{what}: expected memory format {expected:?}, got {actual:?}")]
    FormatMismatch {
        /// The argument being checked.
        what: &'static str,
        /// The required format.
        expected: MemoryFormat,
        /// The given format.
        actual: MemoryFormat,
    },
    /// An invalid configuration value.
    #[error("invalid configuration: {field} {message}")]
    InvalidConfig {
        /// The field (`num_features`, `eps`, `momentum`).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor created on another [`GpuContext`](crate::GpuContext) was passed in.
    #[error("{what} belongs to a different GpuContext")]
    ContextMismatch {
        /// The argument being checked.
        what: &'static str,
    },
    /// `backward` was called before any successful `forward`.
    #[error("backward called before forward: there is no forward pass to differentiate")]
    NoForward,
    /// The backward entry point does not fit the last forward (a plain
    /// backward after a forward with cross-device statistics, or the
    /// reverse).
    #[error("{0}")]
    WrongBackward(&'static str),
    /// A tensor that backward reads was written after the forward that
    /// saved it (PyTorch raises "one of the variables needed for gradient
    /// computation has been modified by an inplace operation").
    #[error(
        "{what} was modified after the forward pass that saved it; backward would use the new values"
    )]
    ModifiedSinceForward {
        /// `input`, `output` or `residual`.
        what: &'static str,
    },
    /// The requested buffer is not kept by this module (for example running
    /// statistics with `track_running_stats = false`).
    #[error("{name} is not available: {reason}")]
    NotAvailable {
        /// The buffer.
        name: &'static str,
        /// Why it does not exist.
        reason: &'static str,
    },
    /// A buffer given by the application lacks a usage the call needs.
    #[error("{what}: the buffer needs wgpu::BufferUsages::{missing:?}")]
    BufferUsage {
        /// The argument being checked.
        what: &'static str,
        /// The usages it lacks.
        missing: wgpu::BufferUsages,
    },
    /// A byte offset is not a multiple of the alignment the device needs.
    #[error("{what}: offset {offset} is not a multiple of {alignment}")]
    Misaligned {
        /// The argument being checked.
        what: &'static str,
        /// The offset given.
        offset: u64,
        /// The alignment required.
        alignment: u64,
    },
    /// An output tensor shares a buffer with an input of the same call (a
    /// dispatch may not bind one buffer both read-only and read-write, even
    /// at other bytes), or bytes with another output.
    #[error("{what} shares memory with another tensor of the same call")]
    Aliasing {
        /// The output.
        what: &'static str,
    },
    /// A [`ShardMoments`](crate::ShardMoments) or
    /// [`ShardGradSums`](crate::ShardGradSums) value is inconsistent or does
    /// not fit the call.
    #[error("invalid shard statistics: {0}")]
    InvalidShard(String),
    /// A collective operation (all-gather, all-reduce) between replicas failed.
    #[error("collective operation failed: {0}")]
    Collective(String),
    /// A checkpoint (state dict or `.safetensors` file) does not fit the
    /// module, or cannot be read or written.
    #[error("checkpoint: {detail}")]
    Checkpoint {
        /// What kind of problem, for callers that branch on it.
        problem: CheckpointProblem,
        /// The entry concerned, where there is one: with its prefix for a
        /// `.safetensors` file, PyTorch's bare name for a [`StateDict`](crate::StateDict).
        key: Option<String>,
        /// What happened, in words.
        detail: String,
    },
    /// The device lacks a feature the call needs.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The tensor exceeds what this adapter can bind or address.
    #[error("tensor too large for this adapter: {0}")]
    TooLarge(String),
}

/// What to do when no adapter is found, part of [`Error::NoAdapter`]'s message.
const NO_ADAPTER_HINT: &str = "Install a GPU driver, or Mesa's CPU Vulkan driver \
     (Debian/Ubuntu: `apt-get install -y mesa-vulkan-drivers libvulkan1`); or try \
     another backend with WGPU_BACKEND=gl (Mesa: `apt-get install -y libegl1 libgl1-mesa-dri`)";

/// `[4, 3, 2]` as PyTorch prints a `torch.Size`: `[4, 3, 2]`.
fn torch_size(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// What is wrong with a checkpoint ([`Error::Checkpoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckpointProblem {
    /// Reading or writing the file failed.
    Io,
    /// The bytes are not a valid `.safetensors` file.
    Format,
    /// An entry the module needs is not there.
    MissingKey,
    /// An entry the module does not have (strict loading).
    UnexpectedKey,
    /// An entry's shape or length does not fit the module.
    Shape,
    /// An entry's element type cannot be read.
    DType,
    /// A value cannot be stored (a negative count, or one beyond int64).
    Value,
}

impl Error {
    /// An [`Error::Checkpoint`].
    pub(crate) fn checkpoint(
        problem: CheckpointProblem,
        key: Option<&str>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Checkpoint {
            problem,
            key: key.map(str::to_owned),
            detail: detail.into(),
        }
    }

    /// A checkpoint lacks the entry `key`.
    pub(crate) fn missing_key(key: &str) -> Self {
        Self::checkpoint(
            CheckpointProblem::MissingKey,
            Some(key),
            format!("missing key {key:?}"),
        )
    }

    /// A checkpoint has the entry `key`, which the module does not.
    pub(crate) fn unexpected_key(key: &str) -> Self {
        Self::checkpoint(
            CheckpointProblem::UnexpectedKey,
            Some(key),
            format!("unexpected key {key:?}"),
        )
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<wgpu::Error> for Error {
    fn from(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
            // A destroyed or lost device fails every call this way before
            // wgpu runs its lost callback (which may come much later).
            wgpu::Error::Validation { description, .. }
                if description.contains("device is lost") =>
            {
                Error::DeviceLost(description)
            }
            wgpu::Error::Validation { description, .. } => Error::Validation(description),
            wgpu::Error::Internal { description, .. } => Error::Validation(description),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_wording() {
        let e = Error::TooFewValues { shape: vec![1, 4] };
        assert_eq!(
            e.to_string(),
            "Expected more than 1 value per channel when training, got input size torch.Size([1, 4])"
        );
        let e = Error::InvalidRank {
            expected: "4D",
            got: 3,
        };
        assert_eq!(e.to_string(), "expected 4D input (got 3D input)");
    }

    #[test]
    fn no_adapter_says_what_to_install() {
        let e = Error::NoAdapter {
            backends: "vulkan".into(),
            detail: "nothing".into(),
        };
        let text = e.to_string();
        assert!(text.contains("vulkan"), "{text}");
        assert!(
            text.contains("apt-get install -y mesa-vulkan-drivers"),
            "{text}"
        );
        assert!(text.contains("WGPU_BACKEND=gl"), "{text}");
    }
}
