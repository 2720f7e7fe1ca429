//! The report's charts: inline SVG of throughput and latency over time, with the nemesis windows
//! shaded and labelled.

use std::fmt::Write as _;

use super::*;

/// Fault kind → band colour.
pub(super) struct Palette {
    kinds: Vec<String>,
}

pub(super) const BAND_COLOURS: [&str; 8] = [
    "#8250df", "#bf8700", "#1b7c83", "#bf3989", "#6e7781", "#953800", "#0969da", "#4d2d00",
];

impl Palette {
    pub(super) fn new(windows: &[Window]) -> Palette {
        let kinds: BTreeSet<String> = windows.iter().map(|w| w.kind().to_string()).collect();
        Palette {
            kinds: kinds.into_iter().collect(),
        }
    }
    pub(super) fn colour(&self, kind: &str) -> &'static str {
        let i = self.kinds.iter().position(|k| k == kind).unwrap_or(0);
        BAND_COLOURS[i % BAND_COLOURS.len()]
    }
}

pub(super) const SVG_W: f64 = 1200.0;
pub(super) const LEFT: f64 = 70.0;
pub(super) const RIGHT: f64 = 70.0;
pub(super) const LANE_TOP: f64 = 6.0;
pub(super) const LANE_ROW: f64 = 14.0;
pub(super) const PLOT_TOP: f64 = LANE_TOP + LANE_ROW * LABEL_ROWS as f64 + 6.0;
pub(super) const PLOT_H: f64 = 240.0;
pub(super) const SVG_H: f64 = PLOT_TOP + PLOT_H + 44.0;
pub(super) const PLOT_W: f64 = SVG_W - LEFT - RIGHT;

pub(super) fn x_of(span_s: f64, s: f64) -> f64 {
    LEFT + PLOT_W * (s / span_s).clamp(0.0, 1.0)
}

/// Chart y of a value in [0, max] (linear).
pub(super) fn y_lin(v: f64, max: f64) -> f64 {
    PLOT_TOP + PLOT_H * (1.0 - (v / max).clamp(0.0, 1.0))
}

/// A nemesis band's label: window number, description, shortened.
pub(super) fn band_label(i: usize, w: &Window) -> String {
    let d = if w.description.is_empty() {
        "fault"
    } else {
        &w.description
    };
    let mut l = format!("#{} {}", i + 1, truncate(d, 30));
    if !w.closed {
        l.push_str(" (not stopped)");
    }
    l
}

/// A placed band label: its text, x and row.
type Label = Option<(String, f64, usize)>;

/// Band labels placed greedily in rows above the plot: the full label where it fits, else just the
/// window number, else none (the band's tooltip still names it).
pub(super) fn label_rows(windows: &[Window], span_s: f64) -> Vec<Label> {
    let mut row_end = [f64::NEG_INFINITY; LABEL_ROWS];
    windows
        .iter()
        .enumerate()
        .take(MAX_BANDS)
        .map(|(i, w)| {
            for text in [band_label(i, w), format!("#{}", i + 1)] {
                let width = text.chars().count() as f64 * 6.9 + 6.0;
                let x = x_of(span_s, w.start_ns as f64 / 1e9).min(SVG_W - width);
                if let Some(row) = (0..LABEL_ROWS).find(|&r| row_end[r] <= x) {
                    row_end[row] = x + width;
                    return Some((text, x, row));
                }
            }
            None
        })
        .collect()
}

pub(super) fn svg_open(out: &mut String, id: &str, title: &str) {
    let _ = writeln!(
        out,
        "<svg class=\"chart\" id=\"{id}\" viewBox=\"0 0 {SVG_W} {SVG_H}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
}

pub(super) fn bands(
    out: &mut String,
    windows: &[Window],
    span_s: f64,
    palette: &Palette,
    labels: &[Label],
) {
    out.push_str("<g class=\"nemesis-bands\">\n");
    for (i, w) in windows.iter().enumerate().take(MAX_BANDS) {
        let colour = palette.colour(w.kind());
        let x0 = x_of(span_s, w.start_ns as f64 / 1e9);
        let x1 = x_of(span_s, w.stop_ns as f64 / 1e9).max(x0 + 1.5);
        let stop = if w.closed {
            fmt_seconds(w.stop_ns)
        } else {
            format!("{} (end of run, never stopped)", fmt_seconds(w.stop_ns))
        };
        let _ = writeln!(
            out,
            "<rect class=\"nemesis-band\" data-window=\"{}\" x=\"{x0:.1}\" y=\"{PLOT_TOP}\" width=\"{:.1}\" height=\"{PLOT_H}\" fill=\"{colour}\" fill-opacity=\"0.16\"><title>#{} {} · {} → {}</title></rect>",
            i + 1,
            x1 - x0,
            i + 1,
            esc(&w.description),
            fmt_seconds(w.start_ns),
            stop
        );
        if let Some((text, x, row)) = labels.get(i).cloned().flatten() {
            let y = LANE_TOP + LANE_ROW * (row as f64 + 1.0) - 3.0;
            let _ = writeln!(
                out,
                "<line x1=\"{x0:.1}\" x2=\"{x0:.1}\" y1=\"{:.1}\" y2=\"{PLOT_TOP}\" stroke=\"{colour}\" stroke-opacity=\"0.5\"/>\
                 <text class=\"band-label\" data-window=\"{}\" x=\"{:.1}\" y=\"{y:.1}\" style=\"fill:{colour}\">{}</text>",
                y + 3.0,
                i + 1,
                x + 2.0,
                esc(&text)
            );
        }
    }
    out.push_str("</g>\n");
}

/// x grid lines, ticks and labels (seconds since start).
pub(super) fn x_axis(out: &mut String, span_s: f64) {
    let target = span_s / 12.0;
    let step = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|s| *s >= target)
    .unwrap_or_else(|| (target / 3600.0).ceil() * 3600.0);
    let bottom = PLOT_TOP + PLOT_H;
    let mut t = 0.0;
    while t <= span_s + 1e-9 {
        let x = x_of(span_s, t);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PLOT_TOP}\" y2=\"{bottom}\" stroke=\"#eaeef2\"/>\
             <line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{bottom}\" y2=\"{:.1}\" stroke=\"#8c959f\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 5.0,
            bottom + 18.0,
            fmt_num(t)
        );
        t += step;
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{bottom}\" y2=\"{bottom}\" stroke=\"#8c959f\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since start</text>",
        LEFT + PLOT_W,
        LEFT + PLOT_W / 2.0,
        bottom + 36.0
    );
}

/// Linear y grid and labels on the left (or right) side, with an axis title.
pub(super) fn y_axis_lin(out: &mut String, max: f64, title: &str, right: bool, colour: &str) {
    let (x, anchor, tx) = if right {
        (LEFT + PLOT_W, "start", LEFT + PLOT_W + 6.0)
    } else {
        (LEFT, "end", LEFT - 6.0)
    };
    for i in 0..=5 {
        let v = max * i as f64 / 5.0;
        let y = y_lin(v, max);
        if !right {
            let _ = write!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eaeef2\"/>",
                LEFT + PLOT_W
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" style=\"fill:{colour}\">{}</text>",
            y + 4.0,
            fmt_num(v)
        );
    }
    axis_title(out, x, right, title, colour);
}

pub(super) fn axis_title(out: &mut String, x: f64, right: bool, title: &str, colour: &str) {
    let (tx, rot) = if right {
        (x + 52.0, 90)
    } else {
        (x - 52.0, -90)
    };
    let ty = PLOT_TOP + PLOT_H / 2.0;
    let _ = writeln!(
        out,
        "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PLOT_TOP}\" y2=\"{:.1}\" stroke=\"#8c959f\"/>\
         <text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" transform=\"rotate({rot} {tx:.1} {ty:.1})\" style=\"fill:{colour}\">{}</text>",
        PLOT_TOP + PLOT_H,
        esc(title)
    );
}

/// A step outline through per-bucket values: runs of equal values become one segment.
pub(super) fn step_points(
    values: &[f64],
    span_s: f64,
    bucket_s: f64,
    y: impl Fn(f64) -> f64,
) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i + 1;
        while j < values.len() && values[j] == values[i] {
            j += 1;
        }
        let yv = y(values[i]);
        pts.push((x_of(span_s, i as f64 * bucket_s), yv));
        pts.push((x_of(span_s, j as f64 * bucket_s), yv));
        i = j;
    }
    pts
}

pub(super) fn path_of(pts: impl IntoIterator<Item = (f64, f64)>) -> String {
    let mut d = String::new();
    for (k, (x, y)) in pts.into_iter().enumerate() {
        let _ = write!(d, "{}{x:.1} {y:.1}", if k == 0 { "M" } else { "L" });
    }
    d
}

pub(super) fn no_data(out: &mut String, what: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"font-size:15px;fill:#8c959f\">{}</text>",
        LEFT + PLOT_W / 2.0,
        PLOT_TOP + PLOT_H / 2.0,
        esc(what)
    );
}

pub(super) fn legend(
    out: &mut String,
    items: &[(&str, &str, bool)],
    windows: &[Window],
    palette: &Palette,
) {
    out.push_str("<div class=\"legend\">");
    for (name, colour, line) in items {
        let _ = write!(
            out,
            "<span><i class=\"sw{}\" style=\"background:{colour}\"></i>{}</span>",
            if *line { " line" } else { "" },
            esc(name)
        );
    }
    for kind in &palette.kinds {
        let n = windows.iter().filter(|w| w.kind() == kind).count();
        let _ = write!(
            out,
            "<span><i class=\"sw\" style=\"background:{};opacity:.35\"></i>fault: {} ({n})</span>",
            palette.colour(kind),
            esc(kind)
        );
    }
    out.push_str("</div>\n");
}

pub(super) fn charts(out: &mut String, tl: &Timeline, windows: &[Window], palette: &Palette) {
    let span = tl.span_s();
    let bs = tl.bucket_s();
    let labels = label_rows(windows, span);
    let per = if tl.bucket_ns == 1_000_000_000 {
        "1-second buckets".to_string()
    } else {
        format!("{}-second buckets", tl.bucket_ns / 1_000_000_000)
    };
    let capped = if windows.len() > MAX_BANDS {
        format!(
            " Only the first {MAX_BANDS} of {} nemesis windows are drawn.",
            windows.len()
        )
    } else {
        String::new()
    };

    // 1. Throughput.
    let _ = writeln!(
        out,
        "<section id=\"throughput\">\n<h2>Throughput</h2>\n<div class=\"caption\">Transfer batches completed per second by outcome \
         (stacked, left axis; never-completed batches count as info at the end), and transfers acknowledged per second (right axis); {per}. \
         Shaded: nemesis windows.{capped}</div>"
    );
    svg_open(out, "chart-throughput", "throughput");
    bands(out, windows, span, palette, &labels);
    let rate = |v: &[u64]| -> Vec<f64> { v.iter().map(|&n| n as f64 / bs).collect() };
    let ok = rate(&tl.batch[0]);
    let fail = rate(&tl.batch[1]);
    let info = rate(&tl.batch[2]);
    let acked = rate(&tl.acked);
    let c1: Vec<f64> = ok.clone();
    let c2: Vec<f64> = c1.iter().zip(&fail).map(|(a, b)| a + b).collect();
    let c3: Vec<f64> = c2.iter().zip(&info).map(|(a, b)| a + b).collect();
    let max_l = nice_ceil(c3.iter().copied().fold(0.0, f64::max));
    let max_r = nice_ceil(acked.iter().copied().fold(0.0, f64::max));
    y_axis_lin(out, max_l, "batches / s", false, "#424a53");
    y_axis_lin(out, max_r, "transfers acknowledged / s", true, "#0969da");
    x_axis(out, span);
    if tl.any {
        let zero = vec![0.0; tl.buckets];
        for (lower, upper, colour, class) in [
            (&zero, &c1, "#2da44e", "area-ok"),
            (&c1, &c2, "#cf222e", "area-fail"),
            (&c2, &c3, "#e36209", "area-info"),
        ] {
            if lower == upper {
                continue;
            }
            let y = |v: f64| y_lin(v, max_l);
            let mut pts = step_points(upper, span, bs, y);
            let mut back = step_points(lower, span, bs, y);
            back.reverse();
            pts.extend(back);
            let _ = writeln!(
                out,
                "<path class=\"{class}\" d=\"{}Z\" fill=\"{colour}\" fill-opacity=\"0.6\" stroke=\"{colour}\" stroke-width=\"0.6\"/>",
                path_of(pts)
            );
        }
        let _ = writeln!(
            out,
            "<path class=\"line-acked\" d=\"{}\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.4\"/>",
            path_of(step_points(&acked, span, bs, |v| y_lin(v, max_r)))
        );
    } else {
        no_data(out, "no client operations");
    }
    out.push_str("</svg>\n");
    legend(
        out,
        &[
            ("batches ok", "#2da44e", false),
            ("batches failed", "#cf222e", false),
            ("batches info (indefinite)", "#e36209", false),
            ("transfers acknowledged / s", "#0969da", true),
        ],
        windows,
        palette,
    );
    out.push_str("</section>\n");

    // 2. Latency.
    let _ = writeln!(
        out,
        "<section id=\"latency\">\n<h2>Latency</h2>\n<div class=\"caption\">p50, p99 and max of (completion − invoke) over completed ops \
         (ok, fail and info) by completion time, in {per}; log scale. Shaded: nemesis windows.{capped}</div>"
    );
    for (id, name, lat) in [
        ("chart-latency-writes", "transfer batches", &tl.lat_batch),
        ("chart-latency-reads", "reads", &tl.lat_read),
    ] {
        let _ = writeln!(out, "<h3>{name}</h3>");
        latency_chart(out, id, name, lat, tl, windows, palette, &labels);
    }
    legend(
        out,
        &[
            ("p50", "#0969da", true),
            ("p99", "#e36209", true),
            ("max", "#cf222e", true),
        ],
        windows,
        palette,
    );
    out.push_str("</section>\n");
}

#[allow(clippy::too_many_arguments)]
pub(super) fn latency_chart(
    out: &mut String,
    id: &str,
    name: &str,
    lat: &[Vec<u64>],
    tl: &Timeline,
    windows: &[Window],
    palette: &Palette,
    labels: &[Label],
) {
    let span = tl.span_s();
    let bs = tl.bucket_s();
    // (p50, p99, max) in ms per bucket.
    let stats: Vec<Option<[f64; 3]>> = lat
        .iter()
        .map(|v| {
            if v.is_empty() {
                return None;
            }
            let mut s = v.clone();
            s.sort_unstable();
            let ms = |ns: u64| (ns as f64 / 1e6).max(1e-3);
            Some([
                ms(percentile(&s, 0.5)),
                ms(percentile(&s, 0.99)),
                ms(*s.last().unwrap_or(&0)),
            ])
        })
        .collect();
    let lo_v = stats
        .iter()
        .flatten()
        .map(|s| s[0])
        .fold(f64::INFINITY, f64::min);
    let hi_v = stats.iter().flatten().map(|s| s[2]).fold(0.0, f64::max);
    let (lo, hi) = if lo_v.is_finite() {
        let lo = lo_v.log10().floor();
        let hi = hi_v.log10().ceil().max(lo + 1.0);
        (lo, hi)
    } else {
        (0.0, 3.0)
    };
    let y = |ms: f64| PLOT_TOP + PLOT_H * (1.0 - ((ms.log10() - lo) / (hi - lo)).clamp(0.0, 1.0));
    svg_open(out, id, &format!("latency of {name}"));
    bands(out, windows, span, palette, labels);
    // Decade grid lines with labels; 2× and 5× lines too (labelled when the range is narrow).
    let decades = (hi - lo) as i32;
    for e in (lo as i32)..=(hi as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v.log10() > hi + 1e-9 {
                continue;
            }
            let yy = y(v);
            let major = m == 1.0;
            let _ = write!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"{}\"/>",
                LEFT + PLOT_W,
                if major { "#d8dee4" } else { "#f0f2f4" }
            );
            if major || decades <= 2 {
                let label = if e < 0 {
                    format!("{:.*} ms", (-e) as usize, v)
                } else {
                    format!("{v:.0} ms")
                };
                let _ = write!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
                    LEFT - 6.0,
                    yy + 4.0
                );
            }
        }
    }
    out.push('\n');
    axis_title(out, LEFT, false, "latency (ms, log)", "#424a53");
    x_axis(out, span);
    if stats.iter().all(Option::is_none) {
        no_data(out, &format!("no completed {name}"));
    } else {
        for (k, colour, width, class) in [
            (2, "#cf222e", 1.0, "line-max"),
            (1, "#e36209", 1.5, "line-p99"),
            (0, "#0969da", 1.8, "line-p50"),
        ] {
            let mut d = String::new();
            let mut prev = false;
            for (i, s) in stats.iter().enumerate() {
                match s {
                    Some(s) => {
                        let x = x_of(span, (i as f64 + 0.5) * bs);
                        let _ = write!(d, "{}{x:.1} {:.1}", if prev { "L" } else { "M" }, y(s[k]));
                        if !prev && stats.get(i + 1).is_none_or(Option::is_none) {
                            d.push_str("h0.1"); // a lone bucket: a dot
                        }
                        prev = true;
                    }
                    None => prev = false,
                }
            }
            let _ = writeln!(
                out,
                "<path class=\"{class}\" d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" stroke-linejoin=\"round\" stroke-linecap=\"round\"/>"
            );
        }
    }
    out.push_str("</svg>\n");
}
