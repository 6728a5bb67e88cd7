//! The `gputime` section: each op's time on the GPU alone, from timestamps
//! written before and after it in its command encoder, beside the host's
//! time to record and submit it and the time per op of back-to-back
//! submissions. On a real GPU a 16 MiB copy is mostly submit-and-wait
//! latency; these columns separate the kernels' own cost (what the bytes
//! cost) from the fixed cost of a submission. Needs the adapter's
//! `TIMESTAMP_QUERY` and `TIMESTAMP_QUERY_INSIDE_ENCODERS`.

use std::time::{Duration, Instant};

use wgpu_batchnorm::{wgpu, GpuContext, MemoryFormat};

use crate::fixture::{median_of, Fixture, Op};

const OPS: [Op; 4] = [Op::Copy, Op::Train, Op::Eval, Op::Backward];
/// Back-to-back submissions per timing of the pipelined column.
const BURST: u32 = 16;

/// Timestamps around one recorded op.
struct Stamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    period_ns: f64,
}

impl Stamps {
    fn new(ctx: &GpuContext) -> Self {
        let device = ctx.device();
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        Self {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench/timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolve: buffer(
                "bench/timestamps-resolve",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            read: buffer(
                "bench/timestamps-read",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            period_ns: ctx.queue().get_timestamp_period() as f64,
        }
    }

    /// The GPU time of `op` in `f`, from one submission.
    fn gpu_time(&self, f: &mut Fixture, op: Op) -> Duration {
        let ctx = f.ctx.clone();
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bench/gputime"),
            });
        enc.write_timestamp(&self.set, 0);
        f.record(op, &mut enc);
        enc.write_timestamp(&self.set, 1);
        enc.resolve_query_set(&self.set, 0..2, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.read, 0, 16);
        ctx.queue().submit([enc.finish()]);
        let slice = self.read.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map timestamps"));
        ctx.synchronize().expect("sync");
        let ticks: Vec<u64> = {
            let view = slice.get_mapped_range().expect("mapped timestamps");
            bytemuck::pod_collect_to_vec(&view[..])
        };
        self.read.unmap();
        let ns = ticks[1].saturating_sub(ticks[0]) as f64 * self.period_ns;
        Duration::from_nanos(ns as u64)
    }
}

/// Records `op` into a fresh encoder and submits it (no wait).
fn submit(f: &mut Fixture, op: Op) {
    let mut enc = f.ctx.device().create_command_encoder(&Default::default());
    f.record(op, &mut enc);
    f.ctx.queue().submit([enc.finish()]);
}

/// Host time to record and submit `op` once (the wait is not counted).
fn host_time(f: &mut Fixture, op: Op) -> Duration {
    let t = Instant::now();
    submit(f, op);
    let d = t.elapsed();
    f.ctx.synchronize().expect("sync");
    d
}

/// Time per op of `BURST` submissions of `op` waited for once.
fn burst_time(f: &mut Fixture, op: Op) -> Duration {
    let t = Instant::now();
    for _ in 0..BURST {
        submit(f, op);
    }
    f.ctx.synchronize().expect("sync");
    t.elapsed() / BURST
}

pub fn gputime_section(ctx: &GpuContext, runs: usize) {
    let needed = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
    println!("\n### GPU time alone (timestamps), host time, back-to-back\n");
    if !ctx.device().features().contains(needed) {
        println!("(skipped: the adapter lacks TIMESTAMP_QUERY_INSIDE_ENCODERS)");
        return;
    }
    println!("Per op: GPU time between timestamps around its recorded work (x the copy's GPU time); host: recording and submitting it (no wait); burst: time per op of {BURST} submissions waited for once. Medians of {runs}.\n");
    println!("| shape | MiB | copy GPU | train GPU | eval GPU | backward GPU | host: copy / train / eval / backward | burst: copy / train / eval / backward |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let cl = MemoryFormat::ChannelsLast;
    let cf = MemoryFormat::ChannelsFirst;
    let shapes: [(&[usize], MemoryFormat); 14] = [
        (&[262_144, 64], cf),
        (&[2048, 64, 64], cf),
        (&[64, 64, 32, 32], cl),
        (&[262_144, 16], cf),
        (&[1_398_101, 3], cf),
        (&[4096, 1024], cf),
        (&[16, 262_144], cf),
        (&[2, 2_097_152], cf),
        (&[4_194_304, 1], cf),
        (&[16, 64, 64, 64], cl),
        (&[64, 65536], cf),
        (&[64, 4096], cf),
        (&[1024, 64], cf),
        (&[32, 20], cf),
    ];
    let stamps = Stamps::new(ctx);
    for (shape, format) in shapes {
        let mut f = Fixture::new(ctx, shape, format);
        let mut gpu = Vec::new();
        let mut host = Vec::new();
        let mut burst = Vec::new();
        for op in OPS {
            stamps.gpu_time(&mut f, op);
            gpu.push(median_of(
                (0..runs).map(|_| stamps.gpu_time(&mut f, op)).collect(),
            ));
            host.push(median_of(
                (0..runs).map(|_| host_time(&mut f, op)).collect(),
            ));
            burst.push(median_of(
                (0..runs).map(|_| burst_time(&mut f, op)).collect(),
            ));
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let copy = us(gpu[0]).max(1e-3);
        let cell = |k: usize| format!("{:.1} us, {:.2}x", us(gpu[k]), us(gpu[k]) / copy);
        let list = |v: &[Duration]| {
            v.iter()
                .map(|&d| format!("{:.0}", us(d)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "| {} | {:.2} | {:.1} us | {} | {} | {} | {} us | {} us |",
            f.name(),
            f.bytes() as f64 / (1 << 20) as f64,
            us(gpu[0]),
            cell(1),
            cell(2),
            cell(3),
            list(&host),
            list(&burst)
        );
    }
}
