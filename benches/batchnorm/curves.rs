//! The growth curves: time against N at C = 64 and against C at N = 64,
//! fitted with a line in bytes and drawn as SVG.

use super::*;

/// Least-squares `y = a + b x` over the points with `x >= from`, each
/// weighted by `1 / y^2` (relative residuals: the points span decades),
/// and the largest `|y - fit| / y` among them.
fn line_fit(points: &[(f64, f64)], from: f64) -> (f64, f64, f64) {
    let p: Vec<(f64, f64)> = points.iter().copied().filter(|(x, _)| *x >= from).collect();
    if p.len() < 2 {
        return (0.0, 0.0, 0.0);
    }
    let w = |y: f64| 1.0 / (y * y);
    let sw: f64 = p.iter().map(|&(_, y)| w(y)).sum();
    let mx = p.iter().map(|&(x, y)| w(y) * x).sum::<f64>() / sw;
    let my = p.iter().map(|&(_, y)| w(y) * y).sum::<f64>() / sw;
    let sxx: f64 = p.iter().map(|&(x, y)| w(y) * (x - mx) * (x - mx)).sum();
    let sxy: f64 = p.iter().map(|&(x, y)| w(y) * (x - mx) * (y - my)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    let worst = p
        .iter()
        .map(|(x, y)| ((a + b * x) - y).abs() / y)
        .fold(0.0, f64::max);
    (a, b, worst)
}

/// Time against N and against C, with line fits and SVG charts.
pub fn curves_section(ctx: &GpuContext) {
    let ops = [Op::Copy, Op::Train, Op::Eval, Op::Backward];
    let colors = ["#888888", "#d62728", "#1f77b4", "#2ca02c"];
    for (axis, sweep, fixed) in [("N", 10..=20, 64usize), ("C", 4..=16, 64)] {
        println!(
            "\n### Growth: time against {axis} ({} = {fixed})\n",
            if axis == "N" { "C" } else { "N" }
        );
        println!("| {axis} | MiB | copy | train forward | eval forward | backward |");
        println!("| --- | --- | --- | --- | --- | --- |");
        let mut series: Vec<Vec<(f64, f64)>> = vec![Vec::new(); ops.len()];
        let mut by_bytes: Vec<Vec<(f64, f64)>> = vec![Vec::new(); ops.len()];
        let points: Vec<(u32, usize)> = sweep.map(|e| (e, 1usize << e)).collect();
        let mut fixtures: Vec<Fixture> = points
            .iter()
            .map(|&(_, v)| {
                let shape = if axis == "N" { [v, fixed] } else { [fixed, v] };
                Fixture::new(ctx, &shape, CF)
            })
            .collect();
        // Rounds interleave the points, as in the shapes section: a drift
        // of the host's speed over the minutes the sweep takes moves every
        // point alike instead of bending the line. A first round warms up;
        // points over 64 MiB take 3 rounds.
        let mut samples = vec![vec![Vec::new(); ops.len()]; fixtures.len()];
        for round in 0..=runs() {
            for (f, per_op) in fixtures.iter_mut().zip(samples.iter_mut()) {
                if round > 3 && f.bytes() > 64 << 20 {
                    continue;
                }
                for (&op, times) in ops.iter().zip(per_op.iter_mut()) {
                    let t = Instant::now();
                    f.run(op);
                    if round > 0 {
                        times.push(t.elapsed());
                    }
                }
            }
        }
        for ((&(e, v), f), per_op) in points.iter().zip(&fixtures).zip(samples) {
            let t: Vec<Duration> = per_op.into_iter().map(median_of).collect();
            let mib = f.bytes() as f64 / (1 << 20) as f64;
            for ((s, b), d) in series.iter_mut().zip(by_bytes.iter_mut()).zip(&t) {
                s.push((v as f64, ms(*d)));
                b.push((mib, ms(*d)));
            }
            let cells: Vec<String> = t.iter().map(|d| format!("{:.3} ms", ms(*d))).collect();
            println!("| 2^{e} | {mib:.2} | {} |", cells.join(" | "));
        }
        drop(fixtures);
        println!("\nLeast-squares line t = a + b * MiB over the points of at least 1 MiB (relative residuals), and the largest relative distance of those points from it (straight in bytes: small).\n");
        println!("| op | a (fixed) | b (per MiB) | x copy's b | largest distance |");
        println!("| --- | --- | --- | --- | --- |");
        let fits: Vec<(f64, f64, f64)> = by_bytes.iter().map(|p| line_fit(p, 1.0)).collect();
        for (op, &(a, b, worst)) in ops.iter().zip(&fits) {
            println!(
                "| {} | {a:.3} ms | {b:.3} ms | {:.2} | {:.1}% |",
                op.name(),
                b / fits[0].1,
                worst * 100.0
            );
        }
        let lines: Vec<chart::Series> = ops
            .iter()
            .zip(colors)
            .zip(series)
            .map(|((op, color), points)| chart::Series {
                label: op.name().into(),
                color,
                points,
            })
            .collect();
        let other = if axis == "N" { "C = 64" } else { "N = 64" };
        let svg = chart::svg(
            &format!("Time against {axis} ({other}), f32, GPU completion included"),
            axis,
            "time",
            &lines,
        );
        let dir = std::env::var("BN_CURVES_DIR")
            .unwrap_or_else(|_| format!("{}/benches", env!("CARGO_MANIFEST_DIR")));
        let path = format!("{dir}/growth_{}.svg", axis.to_lowercase());
        if std::fs::write(&path, svg).is_ok() {
            println!("\n(written to {path})");
        }
    }
}
