//! A module's bind-group cache: the bind groups of its recent dispatches,
//! keyed by pipeline and by what they bind, so a training loop that passes
//! the same tensors back creates none in steady state.

use std::collections::VecDeque;

use super::binding::Binding;
use super::buffer::BufferSlice;
use super::pipelines::Kernel;
use crate::types::DType;

/// What a cached bind group binds, for one pipeline.
#[derive(PartialEq)]
pub(crate) struct BindKey {
    pub kernel: Kernel,
    pub dtype: DType,
    pub thread_partials: bool,
    pub slices: Vec<(Binding, BufferSlice)>,
}

/// A module's recently used bind groups, most recent first. Entries whose
/// tensors were dropped are evicted, so the cache never keeps their memory.
pub(crate) struct BindGroupCache {
    entries: VecDeque<(BindKey, wgpu::BindGroup)>,
}

/// Bind groups a module keeps: enough for a forward and a backward of a
/// few chunks each, twice (ping-pong buffers).
const CACHE_CAPACITY: usize = 24;

impl BindGroupCache {
    pub fn new() -> Self {
        Self {
            entries: VecDeque::new(),
        }
    }

    pub fn get_or_create(
        &mut self,
        device: &wgpu::Device,
        pipeline: &wgpu::ComputePipeline,
        key: BindKey,
        label: &str,
    ) -> wgpu::BindGroup {
        self.entries
            .retain(|(k, _)| k.slices.iter().all(|(_, s)| s.alive()));
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            if let Some(hit) = self.entries.remove(i) {
                let group = hit.1.clone();
                self.entries.push_front(hit);
                return group;
            }
        }
        let entries: Vec<wgpu::BindGroupEntry<'_>> = key
            .slices
            .iter()
            .map(|(b, s)| wgpu::BindGroupEntry {
                binding: *b as u32,
                resource: s.resource(),
            })
            .collect();
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        self.entries.push_front((key, group.clone()));
        self.entries.truncate(CACHE_CAPACITY);
        group
    }
}
