//! Batch-norm throughput against a plain vec4 copy kernel on the same
//! adapter, in the same run. Every timing includes GPU completion (submit,
//! then wait). Minimal traffic, in passes over the tensor: copy 2 (read +
//! write), training forward 3, eval forward 2, backward 5.
//!
//! Sections (`BN_BENCH_SECTIONS`, comma-separated; all by default):
//! - `criterion`: criterion's report for three canonical shapes;
//! - `floors`: the large shapes against the copy and against the floors
//!   (the same passes with no arithmetic: a read-only reduction pass, then a
//!   copy or an add);
//! - `shapes`: the same bytes (16 MiB) in shapes users meet, with each op's
//!   time per byte against the best shape's (the shape rule: at most 1.3x),
//!   the fused epilogues included;
//! - `formats`: channels-first against channels-last, and the fused
//!   epilogues against batch norm alone or followed by separate passes;
//! - `small`: small batches against one copy dispatch of the same tensor;
//! - `curves`: time against N at C = 64 and against C at N = 64, written to
//!   `benches/growth_n.svg` and `benches/growth_c.svg` (or into the
//!   folder `BN_CURVES_DIR` names);
//! - `gputime`: each op's GPU time alone (timestamps around its recorded
//!   work, where the adapter has them), the host's time to record and
//!   submit it, and the time per op of back-to-back submissions.
//!
//! `BN_PEAK_GBPS` (the card's peak memory bandwidth) adds each op's share
//! of it to the floors section. `BN_COLUMNS=0` or `=1` forces the column kernels off or on (see
//! `Tuning::columns`) and `BN_THREAD_PARTIALS=0` or `=1` how reductions
//! merge a workgroup's threads (`Tuning::thread_partials`; `0` runs a GPU's
//! kernels on a CPU adapter) to compare strategies. `BN_BENCH_RUNS` sets the runs per median (default 7); `BN_BENCH_SHAPES`
//! (comma-separated, e.g. `2x2097152,16x262144`; a shape not in the list
//! is measured too, channels-first, or channels-last with a `:cl` suffix)
//! limits the shapes section. The host's CPU
//! model and the adapter head the output: compare ratios within one run.

mod baseline;
mod chart;
mod curves;
mod fixture;
mod gputime;
mod small;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use fixture::{median_of, Fixture, Op};
use wgpu_batchnorm::{wgpu, ContextOptions, GpuContext, MemoryFormat};

const CF: MemoryFormat = MemoryFormat::ChannelsFirst;
const CL: MemoryFormat = MemoryFormat::ChannelsLast;

/// 16 MiB of f32 each (the shapes; 65536x3x21 is 15.75 MiB,
/// 32x131071 128 bytes less: odd C in few rows, whose rows are 4 bytes
/// short of a power of two apart; 24x174761, 8 bytes less, odd C whose
/// rows are not).
const SHAPES: &[&[usize]] = &[
    &[4, 1_048_576],
    &[8, 524_288],
    &[32, 131_072],
    &[32, 131_071],
    &[24, 174_761],
    &[64, 65536],
    &[262_144, 16],
    &[4096, 1024],
    &[1, 1, 4_194_304],
    &[4_194_304, 1],
    &[65536, 3, 21],
    &[16, 262_144],
    &[2, 2_097_152],
    &[16, 64, 64, 64],
    &[4, 16, 16, 64, 64],
    &[1, 64, 65536],
    &[8, 3, 174_763],
    &[2, 3, 699_051],
    &[1_398_101, 3],
    &[279_620, 15],
];

fn sections() -> Vec<String> {
    std::env::var("BN_BENCH_SECTIONS")
        .unwrap_or_else(|_| "criterion,floors,shapes,formats,small,curves,gputime".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

fn runs() -> usize {
    std::env::var("BN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn criterion_section(ctx: &GpuContext) {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for shape in [&[262_144usize, 64][..], &[2048, 64, 64], &[32, 20]] {
        let mut f = Fixture::new(ctx, shape, CF);
        let mut group = criterion.benchmark_group(format!("batchnorm/{}", f.name()));
        for op in [Op::Copy, Op::Train, Op::Eval, Op::Backward] {
            group.throughput(Throughput::Bytes((op.passes() * f.bytes()) as u64));
            group.bench_function(BenchmarkId::from_parameter(op.name()), |b| {
                b.iter(|| f.run(op))
            });
        }
        group.finish();
    }
    criterion.final_summary();
}

/// The shapes section's shapes: `SHAPES` (more than three dims:
/// channels-last), or those `BN_BENCH_SHAPES` names, listed or not (a
/// malformed entry stops the bench with its name).
fn bench_shapes() -> Vec<(Vec<usize>, MemoryFormat)> {
    let listed = |shape: &[usize]| (shape.to_vec(), if shape.len() > 3 { CL } else { CF });
    let Ok(only) = std::env::var("BN_BENCH_SHAPES") else {
        return SHAPES.iter().map(|s| listed(s)).collect();
    };
    only.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let (dims, format) = match entry.trim().strip_suffix(":cl") {
                Some(dims) => (dims, Some(CL)),
                None => (entry.trim(), None),
            };
            let shape: Vec<usize> = dims
                .split('x')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("BN_BENCH_SHAPES: `{entry}` is not NxC[xL...]: {e}"));
            assert!(
                (2..=5).contains(&shape.len()) && !shape.contains(&0),
                "BN_BENCH_SHAPES: `{entry}` needs 2 to 5 dims, none of them 0"
            );
            match format {
                Some(f) => (shape, f),
                None if SHAPES.contains(&shape.as_slice()) => listed(&shape),
                None => (shape, CF),
            }
        })
        .collect()
}

/// The shape rule: each op's time per byte against the best shape's.
fn shapes_section(ctx: &GpuContext) {
    // Rounds interleave the shapes: each round runs every shape's copy and
    // ops once, so a drift of the host's speed over the minutes this takes
    // moves every shape alike. A first round warms up and is not counted.
    let ops = [
        Op::Train,
        Op::Eval,
        Op::Backward,
        Op::EvalRelu,
        Op::TrainAddRelu,
    ];
    let mut fixtures: Vec<Fixture> = bench_shapes()
        .into_iter()
        .map(|(shape, format)| Fixture::new(ctx, &shape, format))
        .collect();
    // Per fixture: the copy's samples, then each op's.
    let mut samples: Vec<Vec<Vec<Duration>>> = fixtures
        .iter()
        .map(|_| vec![Vec::new(); ops.len() + 1])
        .collect();
    for round in 0..=runs() {
        for (f, s) in fixtures.iter_mut().zip(&mut samples) {
            for (k, &op) in std::iter::once(&Op::Copy).chain(&ops).enumerate() {
                let t = Instant::now();
                f.run(op);
                if round > 0 {
                    s[k].push(t.elapsed());
                }
            }
        }
    }
    let rows: Vec<(String, usize, Vec<Duration>)> = fixtures
        .iter()
        .zip(samples)
        .map(|(f, s)| (f.name(), f.bytes(), s.into_iter().map(median_of).collect()))
        .collect();
    println!("\n### The same bytes in every shape\n");
    println!("Each cell: time, x copy of the same bytes, and per-byte time against the best shape for that op (the rule: <= 1.3). Medians over {} rounds, each running every shape once. The fused ops: eval + ReLU, and training + residual add + ReLU (4 passes at least).\n", runs());
    println!("| shape | MiB | copy | train forward | eval forward | backward | eval + relu (fused) | train + add + relu (fused) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let best: Vec<f64> = (1..=ops.len())
        .map(|k| {
            rows.iter()
                .map(|r| r.2[k].as_secs_f64() / r.1 as f64)
                .fold(f64::MAX, f64::min)
        })
        .collect();
    for (name, bytes, t) in &rows {
        let copy = t[0].as_secs_f64();
        let cells: Vec<String> = (1..=ops.len())
            .map(|k| {
                let per_byte = t[k].as_secs_f64() / *bytes as f64;
                format!(
                    "{:.1} ms, {:.2}x, {:.2}",
                    ms(t[k]),
                    t[k].as_secs_f64() / copy,
                    per_byte / best[k - 1]
                )
            })
            .collect();
        println!(
            "| {name} | {:.2} | {:.1} ms | {} |",
            *bytes as f64 / (1 << 20) as f64,
            copy * 1e3,
            cells.join(" | ")
        );
    }
}

/// The large shapes against the copy and against lavapipe's (or the
/// GPU's) floors: the same passes with no arithmetic to speak of.
fn floors_section(ctx: &GpuContext) {
    println!("\n### Large shapes: x copy, and the floors\n");
    println!("Floors: train = a read-only reduction pass then a copy (3 passes); eval = the copy (2 passes); backward = a read-only pass over two tensors then their sum (5 passes).\n");
    println!("| shape | copy | train (x copy; x floor) | eval (x copy) | backward (x copy; x floor) | train floor (x copy) | backward floor (x copy) |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut rate_lines = Vec::new();
    for (shape, format) in [
        (&[262_144usize, 64][..], CF),
        (&[2048, 64, 64], CF),
        (&[64, 64, 32, 32], CL),
    ] {
        let mut f = Fixture::new(ctx, shape, format);
        let copy = f.time(Op::Copy, runs()).as_secs_f64();
        let t = [
            Op::Train,
            Op::Eval,
            Op::Backward,
            Op::TrainFloor,
            Op::BackwardFloor,
        ]
        .map(|op| f.time(op, runs()).as_secs_f64());
        println!(
            "| {} | {:.1} ms | {:.2}x; {:.2}x | {:.2}x | {:.2}x; {:.2}x | {:.2}x | {:.2}x |",
            f.name(),
            copy * 1e3,
            t[0] / copy,
            t[0] / t[3],
            t[1] / copy,
            t[2] / copy,
            t[2] / t[4],
            t[3] / copy,
            t[4] / copy
        );
        let bytes = f.bytes() as f64;
        let rates: Vec<String> = [
            (Op::Copy, copy),
            (Op::Train, t[0]),
            (Op::Eval, t[1]),
            (Op::Backward, t[2]),
        ]
        .iter()
        .map(|&(op, secs)| {
            let gbps = op.passes() as f64 * bytes / secs / 1e9;
            match peak_gbps() {
                Some(p) => format!(
                    "{} {gbps:.0} GB/s ({:.0}% of peak)",
                    op.name(),
                    100.0 * gbps / p
                ),
                None => format!("{} {gbps:.1} GB/s", op.name()),
            }
        })
        .collect();
        rate_lines.push(format!("- {}: {}", f.name(), rates.join(", ")));
    }
    println!(
        "\nBandwidth (minimal passes x tensor bytes / time){}:\n",
        match peak_gbps() {
            Some(p) => format!(", against a peak of {p:.0} GB/s (BN_PEAK_GBPS)"),
            None => String::new(),
        }
    );
    for l in rate_lines {
        println!("{l}");
    }
}

/// The adapter's peak memory bandwidth in GB/s, if given (`BN_PEAK_GBPS`).
fn peak_gbps() -> Option<f64> {
    std::env::var("BN_PEAK_GBPS")
        .ok()
        .and_then(|v| v.parse().ok())
}

fn formats_section(ctx: &GpuContext) {
    println!("\n### Memory formats and fused epilogues\n");
    println!("| shape | op | time | x copy |");
    println!("| --- | --- | --- | --- |");
    for (shape, format) in [
        (&[16usize, 64, 64, 64][..], CF),
        (&[16, 64, 64, 64], CL),
        (&[64, 1024, 64], CF),
        (&[64, 1024, 64], CL),
        (&[262_144, 16], CF),
    ] {
        let mut f = Fixture::new(ctx, shape, format);
        let copy = f.time(Op::Copy, runs());
        for op in [
            Op::Train,
            Op::Eval,
            Op::Backward,
            Op::EvalRelu,
            Op::TrainAddRelu,
            Op::TrainThenAddRelu,
        ] {
            let t = f.time(op, runs());
            println!(
                "| {} | {} | {:.1} ms | {:.2} |",
                f.name(),
                op.name(),
                ms(t),
                t.as_secs_f64() / copy.as_secs_f64()
            );
        }
    }
}

fn main() {
    let mut options = ContextOptions::from_env().unwrap_or_else(|e| panic!("{e}"));
    if let Ok(v) = std::env::var("BN_COLUMNS") {
        options.tuning.columns = Some(v != "0");
    }
    if let Ok(v) = std::env::var("BN_THREAD_PARTIALS") {
        options.tuning.thread_partials = Some(v != "0");
    }
    // For the gputime section, where the adapter has them.
    options.features =
        wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
    let ctx = GpuContext::with_options(options).unwrap_or_else(|e| panic!("no GPU adapter: {e}"));
    let adapter = ctx
        .adapter_info()
        .map(|i| format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type))
        .unwrap_or_default();
    println!(
        "\n## {adapter} on {} ({} CPU threads; LP_NUM_THREADS={})\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::var("LP_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    println!("Medians of {} runs, GPU completion included.", runs());
    let sections = sections();
    let has = |s: &str| sections.iter().any(|x| x == s);
    if has("criterion") {
        criterion_section(&ctx);
    }
    if has("floors") {
        floors_section(&ctx);
    }
    if has("shapes") {
        shapes_section(&ctx);
    }
    if has("formats") {
        formats_section(&ctx);
    }
    if has("small") {
        small::small_section(&ctx);
    }
    if has("curves") {
        curves::curves_section(&ctx);
    }
    if has("gputime") {
        gputime::gputime_section(&ctx, runs());
    }
}
