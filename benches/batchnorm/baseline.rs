//! The baseline kernels of `shaders/baselines.wgsl`: a vec4 copy (what every
//! timing is divided by), the separate add and ReLU passes the fused
//! epilogue replaces, and the read-only reductions of the floors.

use wgpu_batchnorm::{wgpu, GpuContext, Tensor};

const BASELINES: &str = include_str!("../../shaders/baselines.wgsl");

/// One compiled baseline kernel bound to its tensors: one bind group and
/// dispatch per part of at most one storage binding.
pub struct Kernel {
    pipeline: wgpu::ComputePipeline,
    parts: Vec<(wgpu::BindGroup, (u32, u32))>,
}

fn binding(t: &Tensor, binding: u32, (start, bytes): (u64, u64)) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: t.buffer(),
            offset: t.offset() + start,
            size: wgpu::BufferSize::new(bytes),
        }),
    }
}

impl Kernel {
    /// `entry` (`copy`, `add`, `relu`, `sum`, `sum2`) from `src` (and
    /// `other` for add and sum2) to `dst`.
    pub fn new(
        ctx: &GpuContext,
        entry: &str,
        src: &Tensor,
        dst: &Tensor,
        other: Option<&Tensor>,
    ) -> Self {
        let device = ctx.device();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("bench/baselines"),
            source: wgpu::ShaderSource::Wgsl(BASELINES.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let limits = device.limits();
        let total = (src.numel() as u64 * 4).div_ceil(16) * 16;
        let part = limits.max_storage_buffer_binding_size / 256 * 256;
        let max = limits.max_compute_workgroups_per_dimension;
        let mut parts = Vec::new();
        let mut start = 0;
        while start < total {
            let bytes = part.min(total - start);
            let range = (start, bytes);
            let mut entries = vec![binding(src, 0, range), binding(dst, 1, range)];
            if let Some(o) = other {
                entries.push(binding(o, 2, range));
            }
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(entry),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            let mut groups = (bytes / 16).div_ceil(256).max(1) as u32;
            if entry.starts_with("sum") {
                // Grid-stride reductions: enough threads to fill the device.
                groups = groups.min(512);
            }
            let gy = groups.div_ceil(max);
            parts.push((bind_group, (groups.div_ceil(gy), gy)));
            start += bytes;
        }
        Self { pipeline, parts }
    }

    /// Records the dispatches into `encoder`.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("bench/baseline"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        for (bind_group, (gx, gy)) in &self.parts {
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(*gx, *gy, 1);
        }
    }

    /// One submission of the dispatches.
    pub fn run(&self, ctx: &GpuContext) {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        self.record(&mut enc);
        ctx.queue().submit([enc.finish()]);
    }
}
