//! A small SVG line chart (log2 x axis, log10 y axis) for the growth
//! curves, written by hand: a few lines of SVG do not need a plotting
//! library.

use std::fmt::Write;

/// One line: a label, a colour and `(x, y)` points.
pub struct Series {
    pub label: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// A chart of `series`, `x` on a log2 axis and `y` on a log10 axis.
pub fn svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 440.0, 80.0, 200.0, 40.0, 60.0);
    let pts = series.iter().flat_map(|s| s.points.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts.filter(|(x, y)| *x > 0.0 && *y > 0.0) {
        x0 = x0.min(x.log2());
        x1 = x1.max(x.log2());
        y0 = y0.min(y.log10());
        y1 = y1.max(y.log10());
    }
    let (y0, y1) = (y0.floor(), y1.ceil().max(y0.floor() + 1.0));
    let x1 = x1.max(x0 + 1.0);
    let px = |x: f64| left + (x.log2() - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (y1 - y.log10()) / (y1 - y0) * (h - top - bottom);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
        (w - right + left) / 2.0
    );
    // Axes, grid and ticks.
    let (xa, xb, ya, yb) = (left, w - right, top, h - bottom);
    let _ = writeln!(
        out,
        r#"<path d="M{xa},{ya} V{yb} H{xb}" stroke="black" fill="none"/>"#
    );
    let mut e = y0;
    while e <= y1 {
        let y = py(10f64.powf(e));
        let _ = writeln!(
            out,
            r##"<path d="M{xa},{y} H{xb}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            xa - 6.0,
            y + 4.0,
            tick(10f64.powf(e))
        );
        e += 1.0;
    }
    let mut k = x0.ceil();
    while k <= x1 {
        let x = px(2f64.powf(k));
        let _ = writeln!(
            out,
            r##"<path d="M{x},{yb} v5" stroke="black"/><text x="{x}" y="{}" text-anchor="middle">2^{k}</text>"##,
            yb + 18.0
        );
        k += 2.0;
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        (xa + xb) / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{y_label}</text>"#,
        (ya + yb) / 2.0,
        (ya + yb) / 2.0
    );
    // Lines and legend.
    for (i, s) in series.iter().enumerate() {
        let d: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            d.join(" "),
            s.color
        );
        let ly = top + 20.0 * i as f64 + 10.0;
        let _ = writeln!(
            out,
            r#"<path d="M{},{ly} h24" stroke="{}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            xb + 16.0,
            s.color,
            xb + 46.0,
            ly + 4.0,
            s.label
        );
    }
    out.push_str("</svg>\n");
    out
}

fn tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v} ms")
    }
}
