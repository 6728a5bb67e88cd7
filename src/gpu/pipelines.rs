//! The context's pipeline cache: every kernel the library dispatches, named
//! by a [`Kernel`] and compiled the first time it is used (one shader module
//! per family and dtype, one pipeline per entry point and constant set),
//! then shared by every module and call on the context.

use std::collections::HashMap;
use std::sync::Mutex;

use super::driver_lock::serialized;
use super::plan::{ColumnKernel, ColumnRegs, Variant};
use super::scope::checked;
use super::shaders::{module_source, Family};
use crate::error::{Error, Result};
use crate::types::DType;

/// One kernel of the library: an entry point with its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// Per-channel partial moments of `x`; the rows entry point that
    /// sweeps (`true`, [`ReducePlan::sweep`](super::plan::ReducePlan::sweep)).
    MomentsPartial(Variant, bool),
    /// Per-channel partial gradient sums of `dy`, `dy * x_hat` (sweeping:
    /// `true`).
    GradsPartial(Variant, bool),
    /// Merge moment partials; terms; running-statistics update (one
    /// workgroup per channel: `true`).
    MomentsFinalize(bool),
    /// Each channel's first value out of a first row longer than one
    /// binding, over one chunk (`heads.wgsl`).
    GatherHeads,
    /// Terms from the running statistics.
    EvalPrepare,
    /// A shard's merged moments out, for statistics across devices (one
    /// workgroup per channel: `true`).
    MomentsExport(bool),
    /// Terms (and the running update) from moments merged across devices.
    MomentsApply,
    /// Merge gradient partials; grad_weight, grad_bias, grad_input terms
    /// (one workgroup per channel: `true`).
    GradsFinalize(bool),
    /// The same from gradient sums merged across devices.
    GradsApply,
    /// Gradient sums redone carefully where they came out non-finite, over
    /// one chunk, a window of a channel's values per item (`rescue.wgsl`,
    /// `grads_careful.wgsl`).
    GradsRescue,
    /// After `GradsRescue` over a chunk: its windows' sums added, in order,
    /// to the sums carried from the chunks before.
    GradsRescueMerge,
    /// grad_weight, grad_bias and grad_input terms from those sums.
    GradsRescueFinish,
    /// `y = act((x - shift) * scale + offset + residual)` over run slabs
    /// (`true`, [`Slab::runs`](super::plan::Slab::runs)) or strided ones,
    /// with the `EPILOGUE` bits.
    Normalize(Variant, bool, u32),
    /// `dx = scale * (dy + slope * (x - shift) + intercept)` over run slabs
    /// (`true`) or strided ones.
    GradInput(Variant, bool),
    /// The output gradient through the epilogue with the `EPILOGUE` bits.
    EpilogueGrad(u32),
    /// Statistics, terms, running update and normalize with the
    /// `EPILOGUE` bits, in the lanes of the [`ColumnKernel`] (one channel
    /// per thread, or four: whole vec4s for `C % 4 == 0`, else single
    /// values); with rows in registers per [`ColumnRegs`]; in workgroups
    /// of the last field's threads (`COLUMN_WG`, the plan's
    /// `column_lanes`), as every column kernel.
    ForwardColumns(u32, ColumnRegs, ColumnKernel, u32),
    /// Gradient sums, grad_weight, grad_bias and grad_input, in the lanes
    /// of the [`ColumnKernel`]; sums that come out non-finite redone in
    /// the kernel (`true`, `INLINE_RESCUE`) or left to
    /// `BackwardColumnsRescue`.
    BackwardColumns(ColumnRegs, ColumnKernel, bool, u32),
    /// Gradient sums, grad_weight, grad_bias and grad_input terms, one
    /// channel per thread (`INLINE_RESCUE`: `true`, or left to
    /// `GradsRescue`).
    GradsColumns(bool, u32),
    /// After `BackwardColumns`: the channels whose sums came out
    /// non-finite, summed again carefully, with their grad_input.
    BackwardColumnsRescue,
}

impl Kernel {
    fn is_reduction(self) -> bool {
        matches!(self, Kernel::MomentsPartial(..) | Kernel::GradsPartial(..))
    }

    fn family(self, subgroups: bool) -> Family {
        match self {
            Kernel::MomentsPartial(..) | Kernel::GradsPartial(..) if subgroups => {
                Family::ReduceSubgroup
            }
            Kernel::MomentsPartial(..) | Kernel::GradsPartial(..) => Family::ReduceTree,
            Kernel::Normalize(..) | Kernel::GradInput(..) | Kernel::EpilogueGrad(_) => {
                Family::Elementwise
            }
            Kernel::ForwardColumns(_, _, k, _) | Kernel::BackwardColumns(_, k, ..) => match k {
                ColumnKernel::PerChannel => Family::Columns,
                ColumnKernel::Aligned4 => Family::Columns4,
                ColumnKernel::Odd4 => Family::Columns4Odd,
            },
            Kernel::GradsColumns(..) | Kernel::BackwardColumnsRescue => Family::Columns,
            _ => Family::Finalize,
        }
    }

    fn entry_point(self) -> String {
        use Variant::*;
        let name = match self {
            Kernel::ForwardColumns(_, r, k, _) => {
                return format!("forward_columns{}{}", lanes_suffix(k), r.suffix())
            }
            Kernel::BackwardColumns(r, k, ..) => {
                return format!("backward_columns{}{}", lanes_suffix(k), r.suffix())
            }
            Kernel::MomentsPartial(Rows | OddRows, false) => "moments_partial_rows",
            Kernel::MomentsPartial(Rows | OddRows, true) => "moments_partial_rows_sweep",
            Kernel::MomentsPartial(..) => "moments_partial",
            Kernel::GradsPartial(Rows | OddRows, false) => "grads_partial_rows",
            Kernel::GradsPartial(Rows | OddRows, true) => "grads_partial_rows_sweep",
            Kernel::GradsPartial(..) => "grads_partial",
            Kernel::MomentsFinalize(false) => "moments_finalize",
            Kernel::MomentsFinalize(true) => "moments_finalize_groups",
            Kernel::GatherHeads => "gather_heads",
            Kernel::EvalPrepare => "eval_prepare",
            Kernel::MomentsExport(false) => "moments_export",
            Kernel::MomentsExport(true) => "moments_export_groups",
            Kernel::MomentsApply => "moments_apply",
            Kernel::GradsFinalize(false) => "grads_finalize",
            Kernel::GradsFinalize(true) => "grads_finalize_groups",
            Kernel::GradsApply => "grads_apply",
            Kernel::GradsRescue => "grads_rescue",
            Kernel::GradsRescueMerge => "grads_rescue_merge",
            Kernel::GradsRescueFinish => "grads_rescue_finish",
            Kernel::Normalize(Planes, false, _) => "normalize_planes",
            Kernel::Normalize(Planes, true, _) => "normalize_planes_runs",
            Kernel::Normalize(Rows, ..) => "normalize_rows",
            Kernel::Normalize(OddRows | Masked | General, false, _) => "normalize",
            Kernel::Normalize(OddRows | Masked | General, true, _) => "normalize_runs",
            Kernel::GradInput(Planes, false) => "grad_input_planes",
            Kernel::GradInput(Planes, true) => "grad_input_planes_runs",
            Kernel::GradInput(Rows, _) => "grad_input_rows",
            Kernel::GradInput(OddRows | Masked | General, false) => "grad_input",
            Kernel::GradInput(OddRows | Masked | General, true) => "grad_input_runs",
            Kernel::EpilogueGrad(_) => "epilogue_grad",
            Kernel::GradsColumns(..) => "grads_columns",
            Kernel::BackwardColumnsRescue => "backward_columns_rescue",
        };
        name.to_string()
    }

    /// Pipeline-overridable constants (`THREAD_PARTIALS`, `WIDTH`,
    /// `MASKED` in `reduce.wgsl`; `EPILOGUE`; `INLINE_RESCUE` in
    /// `rescue_flag.wgsl`; `COLUMN_WG` in `columns4.wgsl`).
    fn constants(self, thread_partials: bool) -> Vec<(&'static str, f64)> {
        let width = match self {
            Kernel::MomentsPartial(v, _) | Kernel::GradsPartial(v, _)
                if !v.four_channel_lanes() =>
            {
                Some(v.width() as f64)
            }
            _ => None,
        };
        let mut c = Vec::new();
        if self.is_reduction() {
            c.push(("THREAD_PARTIALS", if thread_partials { 1.0 } else { 0.0 }));
        }
        if let Some(w) = width {
            c.push(("WIDTH", w));
            let masked = matches!(
                self,
                Kernel::MomentsPartial(Variant::Masked, _)
                    | Kernel::GradsPartial(Variant::Masked, _)
            );
            c.push(("MASKED", if masked { 1.0 } else { 0.0 }));
        }
        if let Kernel::Normalize(_, _, bits)
        | Kernel::EpilogueGrad(bits)
        | Kernel::ForwardColumns(bits, ..) = self
        {
            c.push(("EPILOGUE", f64::from(bits)));
        }
        if let Kernel::BackwardColumns(_, _, inline, _) | Kernel::GradsColumns(inline, _) = self {
            c.push(("INLINE_RESCUE", if inline { 1.0 } else { 0.0 }));
        }
        if let Kernel::ForwardColumns(.., threads)
        | Kernel::BackwardColumns(.., threads)
        | Kernel::GradsColumns(_, threads) = self
        {
            c.push(("COLUMN_WG", f64::from(threads)));
        }
        c
    }
}

/// The column kernels' entry-point infix: `4` for four channels per
/// thread (`columns4.wgsl`, the same names in both of its modules).
fn lanes_suffix(kernel: ColumnKernel) -> &'static str {
    match kernel {
        ColumnKernel::PerChannel => "",
        ColumnKernel::Aligned4 | ColumnKernel::Odd4 => "4",
    }
}

/// A compiled pipeline's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PipelineKey {
    kernel: Kernel,
    dtype: DType,
    thread_partials: bool,
}

/// Compiled shader modules and pipelines of one device.
pub(crate) struct Pipelines {
    device: wgpu::Device,
    /// Subgroups per workgroup where the reductions combine subgroups
    /// (`Features::SUBGROUP` with a fixed subgroup size dividing `WG`).
    subgroups: Option<u32>,
    modules: Mutex<HashMap<(Family, DType), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

impl Pipelines {
    pub fn new(device: &wgpu::Device, subgroups: Option<u32>) -> Self {
        Self {
            device: device.clone(),
            subgroups,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
        }
    }

    /// Subgroups per workgroup in the reductions, if they combine subgroups.
    pub fn subgroups(&self) -> Option<u32> {
        self.subgroups
    }

    /// Whether the device can run kernels on `dtype` tensors.
    pub fn supports(&self, dtype: DType) -> Result<()> {
        match dtype {
            DType::F32 => Ok(()),
            #[cfg(feature = "f16")]
            DType::F16 if self.device.features().contains(wgpu::Features::SHADER_F16) => Ok(()),
            #[cfg(feature = "f16")]
            DType::F16 => Err(Error::Unsupported(
                "f16 tensors need the adapter's SHADER_F16 feature, which this device lacks",
            )),
        }
    }

    /// Empties the caches, handing their pipelines and shader modules to
    /// the caller (a context's teardown drops them in a driver turn).
    pub fn take_cached(&self) -> impl Send + 'static {
        fn take<K, V>(m: &Mutex<HashMap<K, V>>) -> HashMap<K, V> {
            std::mem::take(&mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
        }
        (take(&self.pipelines), take(&self.modules))
    }

    /// The pipeline of `kernel` for `dtype`, compiled on first use. A
    /// compilation error is returned (and not cached).
    pub fn get(
        &self,
        kernel: Kernel,
        dtype: DType,
        thread_partials: bool,
    ) -> Result<wgpu::ComputePipeline> {
        self.supports(dtype)?;
        let key = PipelineKey {
            kernel,
            dtype,
            thread_partials: thread_partials && kernel.is_reduction(),
        };
        let cache = || {
            self.pipelines
                .lock()
                .map_err(|_| Error::Internal("pipeline cache poisoned"))
        };
        if let Some(p) = cache()?.get(&key) {
            return Ok(p.clone());
        }
        // Compiled without the cache locked (a compilation waits for a
        // driver turn, and other threads' lookups must not wait for it);
        // two threads compiling the same pipeline keep the first.
        let p = self.compile(key)?;
        Ok(cache()?.entry(key).or_insert(p).clone())
    }

    fn compile(&self, key: PipelineKey) -> Result<wgpu::ComputePipeline> {
        let entry = key.kernel.entry_point();
        let constants = key.kernel.constants(key.thread_partials);
        let label = format!(
            "batchnorm/{entry}{}-{}{}",
            constants
                .iter()
                .filter(|(n, _)| *n != "THREAD_PARTIALS")
                .map(|(n, v)| format!("-{}{v}", n.to_ascii_lowercase()))
                .collect::<String>(),
            key.dtype.name(),
            if key.thread_partials { "-threads" } else { "" }
        );
        let _span = crate::trace::span!("compile pipeline", label = label.as_str());
        let family = key.kernel.family(self.subgroups.is_some());
        let module = self.module(family, key.dtype)?;
        serialized(|| {
            checked(&self.device, || {
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(&label),
                        layout: None,
                        module: &module,
                        entry_point: Some(&entry),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &constants,
                            ..Default::default()
                        },
                        cache: None,
                    })
            })
        })
    }

    fn module(&self, family: Family, dtype: DType) -> Result<wgpu::ShaderModule> {
        let cache = || {
            self.modules
                .lock()
                .map_err(|_| Error::Internal("shader module cache poisoned"))
        };
        if let Some(m) = cache()?.get(&(family, dtype)) {
            return Ok(m.clone());
        }
        let label = format!("batchnorm/{}-{}", family.name(), dtype.name());
        let source = module_source(family, dtype);
        // Backends may compile the module here (Vulkan does for modules
        // without overrides): a driver turn, like the pipelines, taken
        // without the cache locked.
        let m = serialized(|| {
            checked(&self.device, || {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&label),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    })
            })
        })?;
        Ok(cache()?.entry((family, dtype)).or_insert(m).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column kernels' workgroups have the plan's threads
    /// (`COLUMN_WG`), each size its own pipeline; the rescue keeps `WG`.
    #[test]
    fn column_kernels_take_their_workgroup_size_as_a_constant() {
        let forward =
            Kernel::ForwardColumns(0, ColumnRegs::Rows64Lanes, ColumnKernel::Aligned4, 32);
        assert!(forward.constants(true).contains(&("COLUMN_WG", 32.0)));
        let backward = Kernel::BackwardColumns(ColumnRegs::Plain, ColumnKernel::Odd4, false, 64);
        assert!(backward.constants(true).contains(&("COLUMN_WG", 64.0)));
        assert!(Kernel::GradsColumns(true, 128)
            .constants(true)
            .contains(&("COLUMN_WG", 128.0)));
        let rescue = Kernel::BackwardColumnsRescue.constants(true);
        assert!(rescue.iter().all(|(name, _)| *name != "COLUMN_WG"));
        assert_ne!(
            Kernel::GradsColumns(true, 32),
            Kernel::GradsColumns(true, 64),
            "one pipeline per size"
        );
    }
}
