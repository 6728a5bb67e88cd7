//! [`ContextOptions`]: how a [`GpuContext`](crate::GpuContext) picks its
//! adapter and device, from code or from the environment.

use crate::error::{Error, Result};

/// How [`GpuContext::with_options`](crate::GpuContext::with_options) picks
/// an adapter and creates a device.
///
/// [`ContextOptions::from_env`] (what [`GpuContext::new`](crate::GpuContext::new)
/// uses) reads `WGPU_BACKEND` (a comma-separated list of `vulkan`, `metal`,
/// `dx12`, `gl`, `webgpu`, or `primary`, `secondary`, `all`),
/// `WGPU_ADAPTER_NAME` (a case-insensitive substring of the adapter name)
/// and `WGPU_POWER_PREF` (`low`, `high`, `none`); an unknown value is an
/// [`Error::InvalidEnv`] naming the accepted ones. The instance takes wgpu's
/// flags for the build (validation in debug builds) and `WGPU_VALIDATION`,
/// `WGPU_DEBUG` and the other `WGPU_*` flag variables, but leaves debug
/// object names off unless `WGPU_DEBUG=1` asks for them (a Vulkan loader
/// race, see the README's backends table).
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// Backends to search.
    pub backends: wgpu::Backends,
    /// Only adapters whose name contains this (case-insensitive).
    pub adapter_name: Option<String>,
    /// Preference between integrated and discrete adapters.
    pub power_preference: wgpu::PowerPreference,
    /// Device limits to request. `None` requests the adapter's own limits,
    /// so large tensors can be bound; `Some(l)` requests exactly `l` (for
    /// example [`wgpu::Limits::downlevel_defaults`]).
    pub limits: Option<wgpu::Limits>,
    /// Further device features to request, for the application's own use
    /// of [`GpuContext::device`](crate::GpuContext::device) (for example
    /// `TIMESTAMP_QUERY | TIMESTAMP_QUERY_INSIDE_ENCODERS` to time work
    /// recorded with `encode_forward`). Only those the adapter has are
    /// requested: check `ctx.device().features()` before relying on one.
    pub features: wgpu::Features,
    /// How the kernels are tuned to the adapter; the defaults pick per
    /// adapter, and results agree either way up to rounding.
    pub tuning: Tuning,
}

/// Kernel tuning. These change speed, never semantics: every setting gives
/// the same statistics up to f32 rounding order, and each is deterministic.
/// The defaults choose per adapter; set them to compare or to work around
/// a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Let the reductions combine a workgroup's threads with subgroup
    /// operations where the adapter has `Features::SUBGROUP` with a fixed
    /// subgroup size (never on wgpu's GL backend); `false` uses the
    /// shared-memory tree everywhere.
    pub subgroups: bool,
    /// Whether reduction threads write their own partial states instead
    /// of merging within the workgroup first (no barriers). `None` picks
    /// per adapter: on CPU adapters (lavapipe, WARP), where a barrier slows
    /// the whole kernel, and only where the extra partials stay small next
    /// to the tensor.
    pub thread_partials: Option<bool>,
    /// Whether `(N, C)` inputs with at most 256 rows take the column
    /// kernels (one thread per channel, or per four channels, over all
    /// rows: no partial states, one dispatch, and for a backward past 2^16
    /// values a second that returns at once unless a gradient sum
    /// overflowed f32; on CPU adapters the rows
    /// stay in registers). `None` picks them where there are also enough
    /// channels to fill the device (up to 256 rows with per-thread
    /// partials, CPU adapters' default; 16 otherwise) or few values in all
    /// (up to 256 rows, 64 otherwise); `Some(true)` for every such input;
    /// `Some(false)` never.
    pub columns: Option<bool>,
}

/// How the reductions combine a workgroup's threads on a context (see
/// [`Tuning`]); reported by
/// [`GpuContext::reduction_merge`](crate::GpuContext::reduction_merge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReductionMerge {
    /// Each thread writes its own partial state (CPU adapters by default);
    /// an op falls back to [`ReductionMerge::WorkgroupTree`] where the
    /// partials would be large next to its tensor.
    ThreadPartials,
    /// Subgroup operations first, then a short shared-memory tree.
    Subgroups,
    /// A shared-memory tree over the workgroup.
    WorkgroupTree,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            subgroups: true,
            thread_partials: None,
            columns: None,
        }
    }
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            backends: wgpu::Backends::all(),
            adapter_name: None,
            power_preference: wgpu::PowerPreference::HighPerformance,
            limits: None,
            features: wgpu::Features::empty(),
            tuning: Tuning::default(),
        }
    }
}

const BACKEND_NAMES: &str = "vulkan, metal, dx12, gl, webgpu, primary, secondary, all \
     (comma-separated)";
const POWER_NAMES: &str = "low, high, none";

impl ContextOptions {
    /// Defaults overridden by `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `WGPU_POWER_PREF`; an unknown value is an [`Error::InvalidEnv`].
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut o = Self::default();
        if let Some(v) = var("WGPU_BACKEND") {
            o.backends = parse_backends(&v)?;
        }
        o.adapter_name = var("WGPU_ADAPTER_NAME");
        if let Some(v) = var("WGPU_POWER_PREF") {
            o.power_preference = parse_power(&v)?;
        }
        Ok(o)
    }
}

/// `WGPU_BACKEND`'s value as backends.
pub(crate) fn parse_backends(value: &str) -> Result<wgpu::Backends> {
    let mut b = wgpu::Backends::empty();
    for name in value.split(',').map(|s| s.trim().to_ascii_lowercase()) {
        b |= match name.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "webgpu" => wgpu::Backends::BROWSER_WEBGPU,
            "primary" => wgpu::Backends::PRIMARY,
            "secondary" => wgpu::Backends::SECONDARY,
            "all" => wgpu::Backends::all(),
            _ => {
                return Err(Error::InvalidEnv {
                    variable: "WGPU_BACKEND",
                    value: value.to_string(),
                    accepted: BACKEND_NAMES,
                })
            }
        };
    }
    Ok(b)
}

/// `WGPU_POWER_PREF`'s value.
pub(crate) fn parse_power(value: &str) -> Result<wgpu::PowerPreference> {
    match value.trim().to_ascii_lowercase().as_str() {
        "low" => Ok(wgpu::PowerPreference::LowPower),
        "high" => Ok(wgpu::PowerPreference::HighPerformance),
        "none" => Ok(wgpu::PowerPreference::None),
        _ => Err(Error::InvalidEnv {
            variable: "WGPU_POWER_PREF",
            value: value.to_string(),
            accepted: POWER_NAMES,
        }),
    }
}

/// `"vulkan, gl"` for the backends in `b`.
pub(crate) fn backend_list(b: wgpu::Backends) -> String {
    let names: Vec<&str> = [
        (wgpu::Backends::VULKAN, "vulkan"),
        (wgpu::Backends::METAL, "metal"),
        (wgpu::Backends::DX12, "dx12"),
        (wgpu::Backends::GL, "gl"),
        (wgpu::Backends::BROWSER_WEBGPU, "webgpu"),
    ]
    .iter()
    .filter(|(flag, _)| b.contains(*flag))
    .map(|(_, name)| *name)
    .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The adapter `o` asks for, or [`Error::NoAdapter`] saying what was tried.
pub(crate) async fn pick_adapter(
    instance: &wgpu::Instance,
    o: &ContextOptions,
) -> Result<wgpu::Adapter> {
    // Only the backends this build of wgpu has can have been tried.
    let tried = o.backends & wgpu::Instance::enabled_backend_features();
    let no_adapter = |detail: String| Error::NoAdapter {
        backends: backend_list(tried),
        detail,
    };
    if let Some(want) = &o.adapter_name {
        let want = want.to_lowercase();
        let adapters = instance.enumerate_adapters(o.backends).await;
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&want))
            .ok_or_else(|| {
                no_adapter(format!(
                    "no adapter name contains {want:?} (available: {names:?})"
                ))
            });
    }
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: o.power_preference,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        })
        .await
        .map_err(|e| no_adapter(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_strictly() {
        assert_eq!(parse_backends("vulkan").ok(), Some(wgpu::Backends::VULKAN));
        assert_eq!(
            parse_backends(" GL , vulkan").ok(),
            Some(wgpu::Backends::GL | wgpu::Backends::VULKAN)
        );
        let e = parse_backends("bogus").expect_err("unknown");
        let text = e.to_string();
        assert!(text.contains("WGPU_BACKEND=\"bogus\""), "{text}");
        assert!(text.contains("vulkan, metal, dx12, gl"), "{text}");
        assert!(parse_backends("vulkan,bogus").is_err());
    }

    #[test]
    fn power_preference_parses_strictly() {
        assert_eq!(
            parse_power("low").ok(),
            Some(wgpu::PowerPreference::LowPower)
        );
        assert_eq!(
            parse_power("HIGH").ok(),
            Some(wgpu::PowerPreference::HighPerformance)
        );
        let text = parse_power("fast").expect_err("unknown").to_string();
        assert!(text.contains("low, high, none"), "{text}");
    }

    #[test]
    fn backend_names() {
        assert_eq!(
            backend_list(wgpu::Backends::VULKAN | wgpu::Backends::GL),
            "vulkan, gl"
        );
        assert_eq!(backend_list(wgpu::Backends::empty()), "none");
    }
}
