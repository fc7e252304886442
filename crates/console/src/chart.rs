//! The overview's activity chart as inline SVG, drawn on the server from numbers only: bars
//! for all events per day, a line for logins. Hand-written because it is one small chart;
//! plotters would add a dependency for the same forty lines.

use std::fmt::Write;

/// One day of the chart.
#[derive(Debug, Clone)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Events that day.
    pub events: u64,
    /// Logins that day.
    pub logins: u64,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// The chart; `days` oldest first. The text inside is only digits and dates, which the
/// caller checked are plain `YYYY-MM-DD` strings (see [`is_plain_day`]).
pub fn activity_svg(days: &[Day]) -> String {
    let max = days
        .iter()
        .map(|d| d.events.max(d.logins))
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = plot_w / days.len().max(1) as f64;
    let y = |v: u64| TOP + plot_h - (v as f64 / max as f64) * plot_h;
    let mut svg = String::with_capacity(8 * 1024);
    let total_events: u64 = days.iter().map(|d| d.events).sum();
    let total_logins: u64 = days.iter().map(|d| d.logins).sum();
    // Writing to a String cannot fail.
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Activity, last {n} days</title><desc id="chart-desc">{total_events} events and {total_logins} logins in {n} days; highest day {max}.</desc>"#,
        n = days.len()
    );
    // Axis and three gridlines with their values.
    for step in 0..=2u64 {
        let value = max * step / 2;
        let gy = y(value);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{gy:.1}" x2="{x2}" y2="{gy:.1}"/><text class="axis" x="{tx}" y="{ty:.1}" text-anchor="end">{value}</text>"#,
            x2 = WIDTH - 8.0,
            tx = LEFT - 6.0,
            ty = gy + 4.0
        );
    }
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + i as f64 * slot + slot * 0.15;
        let top = y(d.events);
        let day = if is_plain_day(&d.day) {
            d.day.as_str()
        } else {
            "?"
        };
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}"><title>{day}: {e} events, {l} logins</title></rect>"#,
            w = slot * 0.7,
            h = TOP + plot_h - top,
            e = d.events,
            l = d.logins
        );
        // Every seventh day labelled, counted from the newest, so today always is.
        if (days.len() - 1 - i) % 7 == 0 {
            let _ = write!(
                svg,
                r#"<text class="axis" x="{cx:.1}" y="{ly}" text-anchor="middle">{label}</text>"#,
                cx = x + slot * 0.35,
                ly = HEIGHT - 8.0,
                label = day.get(5..).unwrap_or(day)
            );
        }
    }
    let points: Vec<String> = days
        .iter()
        .enumerate()
        .map(|(i, d)| format!("{:.1},{:.1}", LEFT + (i as f64 + 0.5) * slot, y(d.logins)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline class="line" points="{}"/></svg>"#,
        points.join(" ")
    );
    svg
}

/// Whether `s` is exactly `YYYY-MM-DD` (digits and dashes), safe to place in markup.
pub fn is_plain_day(s: &str) -> bool {
    s.len() == 10
        && s.bytes().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_bar_per_day_and_escapes_nothing_unexpected() {
        let days: Vec<Day> = (1..=30)
            .map(|i| Day {
                day: format!("2026-11-{i:02}"),
                events: i,
                logins: i / 2,
            })
            .collect();
        let svg = activity_svg(&days);
        assert_eq!(svg.matches("<rect").count(), 30);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("465 events"));
        assert!(svg.contains(">11-30<"));
    }

    #[test]
    fn odd_day_labels_are_replaced() {
        let days = vec![Day {
            day: "<script>".into(),
            events: 0,
            logins: 0,
        }];
        let svg = activity_svg(&days);
        assert!(!svg.contains("<script>"));
    }
}
