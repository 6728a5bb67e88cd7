//! [`GpuContext`]: the adapter, device and queue, the pipeline cache and the
//! error bookkeeping shared by every tensor and module created from it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::buffer::{AllocStats, OwnedBuffer};
use super::driver_lock::{serialized, Reaper};
use super::options::{pick_adapter, ContextOptions, ReductionMerge};
use super::pipelines::Pipelines;
use super::plan::{DeviceLimits, MergeModel, WG};
use super::poller::Poller;
use super::storage::StorageRegistry;
use crate::error::{Error, Result};

static NEXT_CONTEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct ContextInner {
    id: u64,
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter_info: wgpu::AdapterInfo,
    pipelines: Pipelines,
    merge: MergeModel,
    lost: Arc<AtomicBool>,
    lost_reason: Arc<Mutex<String>>,
    /// The first error wgpu reported outside any error scope, kept until
    /// the next call returns it.
    uncaptured: Arc<Mutex<Option<String>>>,
    stats: Arc<AllocStats>,
    storages: StorageRegistry,
    poller: OnceLock<Poller>,
    /// The last handles of the device and queue, and the pipeline caches,
    /// dropped in one driver turn after every other field (declared last).
    reaper: Reaper,
}

impl Drop for ContextInner {
    fn drop(&mut self) {
        // The poll thread first, outside any turn: it may be finishing a
        // wait whose callbacks drop resources. Then the device's work is
        // waited for, also outside a turn, so that the queue's teardown in
        // the reaper's turn has no wait and no callbacks left to run (an
        // application's callback might drop another context there).
        let own_thread = self.poller.get().is_some_and(Poller::is_current);
        drop(self.poller.take());
        if !own_thread && !super::driver_lock::held() {
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
        self.reaper.keep(self.device.clone());
        self.reaper.keep(self.queue.clone());
        self.reaper.keep(self.pipelines.take_cached());
    }
}

/// A wgpu device and queue with this crate's pipeline cache.
///
/// Cheap to clone (an `Arc`), `Send + Sync`. Each pipeline is compiled
/// once, the first time an op needs it, and shared by all modules and
/// tensors made from the context.
#[derive(Clone)]
pub struct GpuContext {
    inner: Arc<ContextInner>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("id", &self.inner.id)
            .field("adapter", &self.inner.adapter_info.name)
            .field("backend", &self.inner.adapter_info.backend)
            .finish()
    }
}

impl GpuContext {
    /// Blocking constructor: picks an adapter honouring `WGPU_BACKEND`,
    /// `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF` (see
    /// [`ContextOptions::from_env`]) and creates a device with the
    /// adapter's limits.
    ///
    /// Returns [`Error::NoAdapter`] (saying what to install) when no
    /// adapter is available, and [`Error::InvalidEnv`] for an unknown
    /// variable value.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// Async form of [`GpuContext::new`].
    pub async fn new_async() -> Result<Self> {
        Self::with_options_async(ContextOptions::from_env()?).await
    }

    /// Blocking constructor with explicit [`ContextOptions`].
    pub fn with_options(options: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::with_options_async(options))
    }

    /// Async constructor with explicit [`ContextOptions`].
    pub async fn with_options_async(options: ContextOptions) -> Result<Self> {
        crate::trace::instrument!("GpuContext::new", Self::create(options)).await
    }

    /// Creates the instance, the device and the instance's drop each in a
    /// driver turn (see `driver_lock`).
    async fn create(options: ContextOptions) -> Result<Self> {
        let desc = super::instance::descriptor(options.backends);
        let instance = serialized(|| super::instance::context_instance(desc));
        let made = Self::create_on(&instance, options).await;
        serialized(move || drop(instance));
        made
    }

    async fn create_on(instance: &wgpu::Instance, options: ContextOptions) -> Result<Self> {
        let adapter = pick_adapter(instance, &options).await?;
        let info = adapter.get_info();
        let limits = match &options.limits {
            Some(l) => l.clone(),
            None => adapter.limits(),
        };
        // The app's features, f16 tensors' SHADER_F16 and the reductions'
        // SUBGROUP where wanted: each only where the adapter has it.
        let mut wanted = options.features;
        if cfg!(feature = "f16") {
            wanted |= wgpu::Features::SHADER_F16;
        }
        if options.tuning.subgroups && info.backend != wgpu::Backend::Gl {
            wanted |= wgpu::Features::SUBGROUP;
        }
        // Native backends create the device inside the call (the future is
        // ready), so the call itself takes the turn.
        let requested = serialized(|| {
            adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("batchnorm/device"),
                required_features: adapter.features() & wanted,
                required_limits: limits,
                ..Default::default()
            })
        });
        let (device, queue) = requested
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let uncaptured = Arc::new(Mutex::new(None));
        {
            // The device is ours: errors outside our scopes (the app's own
            // work on it) are kept and returned by the next call, never
            // dropped and never a panic.
            let slot = uncaptured.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut g) = slot.lock() {
                    g.get_or_insert_with(|| e.to_string());
                }
            }));
        }
        let thread_partials = options
            .tuning
            .thread_partials
            .unwrap_or(info.device_type == wgpu::DeviceType::Cpu);
        crate::trace::event!(
            "GpuContext created",
            adapter = info.name.as_str(),
            backend = info.backend.to_str()
        );
        let merge = MergeModel::for_adapter(Some(info.device_type), thread_partials)
            .with_columns(options.tuning.columns);
        Ok(Self::build(device, queue, info, merge, uncaptured))
    }

    /// Wraps a device and queue the application already owns, so batch norm
    /// shares the app's device. The app's error handlers are left alone:
    /// errors of the app's own work go where the app sends them. Make one
    /// context per device: backward's check of its saved input covers the
    /// writes made through one context's tensors.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let info = device.adapter_info();
        let thread_partials = info.device_type == wgpu::DeviceType::Cpu;
        let merge = MergeModel::for_adapter(Some(info.device_type), thread_partials);
        let ctx = Self::build(device, queue, info, merge, Default::default());
        ctx.check_alive()?;
        Ok(ctx)
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        merge: MergeModel,
        uncaptured: Arc<Mutex<Option<String>>>,
    ) -> Self {
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
        let fixed = info.subgroup_min_size == info.subgroup_max_size && info.subgroup_min_size > 0;
        let subgroups = (device.features().contains(wgpu::Features::SUBGROUP)
            && fixed
            && WG.is_multiple_of(info.subgroup_min_size))
        .then(|| WG / info.subgroup_min_size.max(1));
        Self {
            inner: Arc::new(ContextInner {
                id: NEXT_CONTEXT_ID.fetch_add(1, Ordering::Relaxed),
                pipelines: Pipelines::new(&device, subgroups),
                device,
                queue,
                adapter_info: info,
                merge,
                lost,
                lost_reason,
                uncaptured,
                stats: Default::default(),
                storages: StorageRegistry::default(),
                poller: OnceLock::new(),
                reaper: Reaper::default(),
            }),
        }
    }
}

// Accessors, and what the library's calls share.
impl GpuContext {
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
        Some(&self.inner.adapter_info)
    }

    /// Blocks until all work submitted to the queue has completed.
    ///
    /// A lost device is detected here at the latest: wgpu reports a loss
    /// through its lost callback once the device is idle, and this waits
    /// for that.
    pub fn synchronize(&self) -> Result<()> {
        self.check_lost()?;
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

    /// How the reductions combine a workgroup's threads on this device
    /// (see [`Tuning`](crate::Tuning)). All ways give the same statistics
    /// up to rounding.
    pub fn reduction_merge(&self) -> ReductionMerge {
        if self.inner.merge.thread_partials {
            ReductionMerge::ThreadPartials
        } else if self.inner.pipelines.subgroups().is_some() {
            ReductionMerge::Subgroups
        } else {
            ReductionMerge::WorkgroupTree
        }
    }

    /// Whether two handles refer to the same context.
    pub fn same_as(&self, other: &GpuContext) -> bool {
        self.inner.id == other.inner.id
    }

    pub(crate) fn pipelines(&self) -> &Pipelines {
        &self.inner.pipelines
    }

    pub(crate) fn merge_model(&self) -> MergeModel {
        self.inner.merge
    }

    pub(crate) fn limits(&self) -> DeviceLimits {
        DeviceLimits::of(
            &self.inner.device.limits(),
            self.inner.adapter_info.device_type,
        )
    }

    pub(crate) fn poller(&self) -> &Poller {
        self.inner
            .poller
            .get_or_init(|| Poller::new(self.inner.device.clone()))
    }

    /// The live tensor storages, one per buffer ([`StorageRegistry`]).
    pub(crate) fn storages(&self) -> &StorageRegistry {
        &self.inner.storages
    }

    /// Allocates a buffer counted on this context (see [`OwnedBuffer::new`]).
    pub(crate) fn alloc(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<OwnedBuffer> {
        self.check_lost()?;
        OwnedBuffer::new(&self.inner.device, &self.inner.stats, label, size, usage)
            .map_err(|e| self.lost_or(e))
    }

    /// `Err(DeviceLost)` once the device is gone; otherwise the first
    /// uncaptured wgpu error since the last call, once. Every call checks
    /// this before it changes anything.
    pub(crate) fn check_alive(&self) -> Result<()> {
        self.check_lost()?;
        if let Ok(mut g) = self.inner.uncaptured.lock() {
            if let Some(e) = g.take() {
                return Err(Error::Uncaptured(e));
            }
        }
        Ok(())
    }

    /// `Err(DeviceLost)` once the device is gone.
    pub(crate) fn check_lost(&self) -> Result<()> {
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

    /// `e`, or `DeviceLost` when the device turns out to be gone: wgpu
    /// reports a loss only through its lost callback, which runs once the
    /// device is idle, so this waits for that first (a failed read-back on
    /// a destroyed device is a loss, not a read-back error).
    pub(crate) fn lost_or_waited(&self, e: Error) -> Error {
        let _ = self.inner.device.poll(wgpu::PollType::wait_indefinitely());
        self.lost_or(e)
    }

    /// `e`, or `DeviceLost` once the device is gone; a `DeviceLost` error
    /// marks the context lost for every later call.
    fn lost_or(&self, e: Error) -> Error {
        if let Error::DeviceLost(why) = &e {
            if let Ok(mut g) = self.inner.lost_reason.lock() {
                if g.is_empty() {
                    g.clone_from(why);
                }
            }
            self.inner.lost.store(true, Ordering::SeqCst);
        }
        if self.inner.lost.load(Ordering::SeqCst) {
            return self.check_lost().err().unwrap_or(e);
        }
        e
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
        let out = super::scope::checked(&self.inner.device, f).map_err(|e| self.lost_or(e))?;
        self.check_lost()?;
        out.map_err(|e| self.lost_or(e))
    }
}
