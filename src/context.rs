//! [`GpuContext`]: the adapter, device and queue, plus the compiled
//! pipelines, shared by every tensor and module created from it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::kernels::Kernels;

static NEXT_CONTEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How [`GpuContext::with_options`] picks an adapter and creates a device.
///
/// [`ContextOptions::from_env`] (what [`GpuContext::new`] uses) reads
/// `WGPU_BACKEND` (e.g. `vulkan`, `gl`, `metal`, `dx12`), `WGPU_ADAPTER_NAME`
/// (a case-insensitive substring of the adapter name) and `WGPU_POWER_PREF`
/// (`low`, `high`, `none`).
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
    /// Use subgroup operations in the reductions where the adapter has
    /// `Features::SUBGROUP` (not on wgpu's GL backend); `false` forces the
    /// shared-memory tree everywhere.
    pub subgroups: bool,
    /// Whether reduction threads write their partial states straight to
    /// memory instead of merging within the workgroup first (no barriers).
    /// `None` picks per adapter: on CPU adapters (lavapipe, WARP), where a
    /// barrier slows the whole kernel, and only where the extra partials
    /// stay small next to the tensor. Results are the same up to rounding.
    pub thread_partials: Option<bool>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            backends: wgpu::Backends::all(),
            adapter_name: None,
            power_preference: wgpu::PowerPreference::HighPerformance,
            limits: None,
            subgroups: true,
            thread_partials: None,
        }
    }
}

impl ContextOptions {
    /// Defaults overridden by `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`.
    pub fn from_env() -> Self {
        let mut o = Self::default();
        if let Some(b) = wgpu::Backends::from_env() {
            o.backends = b;
        }
        if let Ok(name) = std::env::var("WGPU_ADAPTER_NAME") {
            if !name.is_empty() {
                o.adapter_name = Some(name);
            }
        }
        if let Some(p) = wgpu::PowerPreference::from_env() {
            o.power_preference = p;
        }
        o
    }
}

pub(crate) struct ContextInner {
    pub(crate) id: u64,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) adapter_info: Option<wgpu::AdapterInfo>,
    pub(crate) kernels: Kernels,
    pub(crate) lost: Arc<AtomicBool>,
    pub(crate) lost_reason: Arc<Mutex<String>>,
    pub(crate) stats: crate::tensor::AllocStats,
}

/// A wgpu device and queue with this crate's compiled pipelines.
///
/// Cheap to clone (an `Arc`), `Send + Sync`. Every pipeline is compiled
/// once, when the context is created, and shared by all modules and tensors
/// made from it.
#[derive(Clone)]
pub struct GpuContext {
    pub(crate) inner: Arc<ContextInner>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("id", &self.inner.id)
            .field(
                "adapter",
                &self.inner.adapter_info.as_ref().map(|i| &i.name),
            )
            .finish()
    }
}

impl GpuContext {
    /// Blocking constructor: picks an adapter honouring `WGPU_BACKEND`,
    /// `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`, creates a device with the
    /// adapter's limits, and compiles the pipelines.
    ///
    /// Returns [`Error::NoAdapter`] when no adapter is available.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// Async form of [`GpuContext::new`].
    pub async fn new_async() -> Result<Self> {
        Self::with_options_async(ContextOptions::from_env()).await
    }

    /// Blocking constructor with explicit [`ContextOptions`].
    pub fn with_options(options: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::with_options_async(options))
    }

    /// Async constructor with explicit [`ContextOptions`].
    pub async fn with_options_async(options: ContextOptions) -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = options.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = pick_adapter(&instance, &options).await?;
        let info = adapter.get_info();
        let limits = match &options.limits {
            Some(l) => l.clone(),
            None => adapter.limits(),
        };
        // f16 tensors need SHADER_F16; take it where the adapter has it, and
        // SUBGROUP for the reductions where wanted.
        let mut wanted = wgpu::Features::SHADER_F16;
        if options.subgroups && info.backend != wgpu::Backend::Gl {
            wanted |= wgpu::Features::SUBGROUP;
        }
        let features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("batchnorm/device"),
                required_features: features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let lost = Arc::new(AtomicBool::new(false));
        let lost_reason = Arc::new(Mutex::new(String::new()));
        {
            let lost = lost.clone();
            let reason = lost_reason.clone();
            device.set_device_lost_callback(move |r, msg| {
                if let Ok(mut g) = reason.lock() {
                    *g = format!("{r:?}: {msg}");
                }
                lost.store(true, Ordering::SeqCst);
            });
        }
        // Errors outside our error scopes must never panic the app: they are
        // reported through the scopes each operation opens.
        device.on_uncaptured_error(Arc::new(|_e: wgpu::Error| {}));
        let thread_partials = options
            .thread_partials
            .unwrap_or(info.device_type == wgpu::DeviceType::Cpu);
        Self::build(
            device,
            queue,
            Some(info),
            thread_partials,
            lost,
            lost_reason,
        )
    }

    /// Wraps a device and queue the application already owns, so batch norm
    /// shares the app's device. The app's error handlers are left alone.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let info = device.adapter_info();
        let thread_partials = info.device_type == wgpu::DeviceType::Cpu;
        Self::build(
            device,
            queue,
            Some(info),
            thread_partials,
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(String::new())),
        )
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter_info: Option<wgpu::AdapterInfo>,
        thread_partials: bool,
        lost: Arc<AtomicBool>,
        lost_reason: Arc<Mutex<String>>,
    ) -> Result<Self> {
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let kernels = Kernels::new(&device, adapter_info.as_ref(), thread_partials);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(e.into());
        }
        Ok(Self {
            inner: Arc::new(ContextInner {
                id: NEXT_CONTEXT_ID.fetch_add(1, Ordering::Relaxed),
                device,
                queue,
                adapter_info,
                kernels,
                lost,
                lost_reason,
                stats: Default::default(),
            }),
        })
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Information about the adapter the device was created on.
    pub fn adapter_info(&self) -> Option<&wgpu::AdapterInfo> {
        self.inner.adapter_info.as_ref()
    }

    /// Blocks until all work submitted to the queue has completed.
    pub fn synchronize(&self) -> Result<()> {
        self.check_alive()?;
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.lost_or(Error::Validation(e.to_string())))?;
        self.check_alive()
    }

    /// Number and total bytes of GPU buffers this crate currently holds
    /// alive on this context (tensors and module workspaces).
    pub fn live_buffers(&self) -> (usize, u64) {
        self.inner.stats.snapshot()
    }

    /// Whether the reductions combine threads with subgroup operations on
    /// this device (adapter with `SUBGROUP` and a fixed subgroup size, and
    /// [`ContextOptions::subgroups`] left on); otherwise they use the
    /// shared-memory tree. Both give the same statistics up to rounding.
    pub fn uses_subgroups(&self) -> bool {
        self.inner.kernels.subgroups.is_some()
    }

    /// Whether reduction threads may write their partial states directly
    /// (see [`ContextOptions::thread_partials`]); each op still falls back
    /// to merging within the workgroup where the partials would be large.
    pub fn uses_thread_partials(&self) -> bool {
        self.inner.kernels.thread_partials()
    }

    /// Whether two handles refer to the same context.
    pub fn same_as(&self, other: &GpuContext) -> bool {
        self.inner.id == other.inner.id
    }

    pub(crate) fn kernels(&self) -> &Kernels {
        &self.inner.kernels
    }

    /// `Err(DeviceLost)` once the device is gone.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.inner.lost.load(Ordering::SeqCst) {
            let why = self
                .inner
                .lost_reason
                .lock()
                .map(|g| g.clone())
                .unwrap_or_default();
            return Err(Error::DeviceLost(why));
        }
        Ok(())
    }

    fn lost_or(&self, e: Error) -> Error {
        match self.check_alive() {
            Err(lost) => lost,
            Ok(()) => e,
        }
    }

    /// Records `f` into a fresh encoder labelled `label` and submits it, all
    /// inside [`GpuContext::scoped`]: one submission per call.
    pub(crate) fn submit<T>(
        &self,
        label: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<T>,
    ) -> Result<T> {
        self.scoped(|| {
            let mut encoder = self
                .inner
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
            let out = f(&mut encoder)?;
            self.inner.queue.submit([encoder.finish()]);
            Ok(out)
        })
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns
    /// whatever wgpu reports into an `Err`.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_alive()?;
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = o.or(v) {
            return Err(self.lost_or(e.into()));
        }
        self.check_alive()?;
        out
    }
}

async fn pick_adapter(instance: &wgpu::Instance, o: &ContextOptions) -> Result<wgpu::Adapter> {
    if let Some(want) = &o.adapter_name {
        let want = want.to_lowercase();
        let adapters = instance.enumerate_adapters(o.backends).await;
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&want))
            .ok_or_else(|| {
                Error::NoAdapter(format!(
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
        .map_err(|e| Error::NoAdapter(format!("{e} (backends {:?})", o.backends)))
}
