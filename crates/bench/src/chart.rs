//! The chart of docs/benchmarks.md: single-event throughput against
//! concurrency (scenario 2), beside the ceilings measured in the same run.
//! Plain SVG, log-log axes.

use crate::scenarios::SweepPoint;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// A horizontal reference line: label and events (or commits) per second.
pub struct Reference<'a> {
    pub label: &'a str,
    pub per_sec: f64,
    pub color: &'a str,
}

pub fn svg(points: &[SweepPoint], refs: &[Reference<'_>], title: &str) -> String {
    let max_clients = points.iter().map(|p| p.clients).max().unwrap_or(1).max(2) as f64;
    let top_rate = points
        .iter()
        .map(|p| p.per_sec)
        .chain(refs.iter().map(|r| r.per_sec))
        .fold(1.0, f64::max);
    let (y_lo, y_hi) = (100f64.log10(), (top_rate * 2.0).log10().ceil());
    let x = |c: f64| LEFT + (c.log2() / max_clients.log2()) * (W - LEFT - RIGHT);
    let y = |r: f64| {
        let v = (r.max(100.0).log10() - y_lo) / (y_hi - y_lo);
        H - BOTTOM - v * (H - TOP - BOTTOM)
    };
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{tx}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>
"##,
        tx = W / 2.0
    );
    // Axes and grid.
    let mut decade = y_lo;
    while decade <= y_hi + 1e-9 {
        let v = 10f64.powf(decade);
        let yy = y(v);
        s += &format!(
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{x2}" y2="{yy:.1}" stroke="#ddd"/><text x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text>
"##,
            x2 = W - RIGHT,
            lx = LEFT - 6.0,
            ty = yy + 4.0,
            label = short(v)
        );
        decade += 1.0;
    }
    let mut c = 1.0;
    while c <= max_clients {
        let xx = x(c);
        s += &format!(
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{yb}" stroke="#eee"/><text x="{xx:.1}" y="{ty}" text-anchor="middle">{c}</text>
"##,
            yb = H - BOTTOM,
            ty = H - BOTTOM + 16.0
        );
        c *= 2.0;
    }
    s += &format!(
        r##"<text x="{cx}" y="{by}" text-anchor="middle">concurrent clients (each waits for its durable ack)</text>
<text x="18" y="{cy}" text-anchor="middle" transform="rotate(-90 18 {cy})">events per second (log)</text>
"##,
        cx = (LEFT + W - RIGHT) / 2.0,
        by = H - 18.0,
        cy = (TOP + H - BOTTOM) / 2.0
    );
    for r in refs {
        let yy = y(r.per_sec);
        s += &format!(
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{x2}" y2="{yy:.1}" stroke="{c}" stroke-dasharray="6 4" stroke-width="1.5"/><text x="{lx}" y="{ty:.1}" fill="{c}">{label}: {v}</text>
"##,
            x2 = W - RIGHT,
            c = r.color,
            lx = W - RIGHT + 6.0,
            ty = yy + 4.0,
            label = r.label,
            v = short(r.per_sec)
        );
    }
    let path: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.clients as f64), y(p.per_sec)))
        .collect();
    s += &format!(
        r##"<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="2.5"/>
"##,
        path.join(" ")
    );
    for p in points {
        let (xx, yy) = (x(p.clients as f64), y(p.per_sec));
        s += &format!(
            r##"<circle cx="{xx:.1}" cy="{yy:.1}" r="4" fill="#1f6feb"/><text x="{xx:.1}" y="{ty:.1}" text-anchor="middle" fill="#1f6feb">{v} (p99 {p99:.1} ms)</text>
"##,
            ty = yy - 10.0,
            v = short(p.per_sec),
            p99 = p.p99_ms
        );
    }
    s += &format!(
        r##"<text x="{lx}" y="{ty}" fill="#1f6feb">agentledger, 1 event per request</text>
</svg>
"##,
        lx = W - RIGHT + 6.0,
        ty = TOP + 10.0
    );
    s
}

fn short(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_point_per_level_and_each_reference() {
        let pts: Vec<SweepPoint> = [1usize, 4, 16]
            .iter()
            .map(|&c| SweepPoint {
                clients: c,
                per_sec: 500.0 * c as f64,
                p50_ms: 1.0,
                p99_ms: 2.0,
            })
            .collect();
        let s = svg(
            &pts,
            &[Reference {
                label: "ceiling",
                per_sec: 90_000.0,
                color: "#c00",
            }],
            "t",
        );
        assert!(s.starts_with("<svg"));
        assert_eq!(s.matches("<circle").count(), 3);
        assert!(s.contains("ceiling: 90.0k"));
        assert!(s.contains("8.0k (p99 2.0 ms)"));
    }
}
