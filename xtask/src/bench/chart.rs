//! The bench's chart: bars of throughput and connections/s per mode and path.
use std::path::Path;

use anyhow::{anyhow, Context as _, Result};

use super::{
    measure::median,
    modes::Mode,
    report::{fmt, Results},
};

/// Bar charts of throughput and connections/s per mode and path.
pub fn chart(results: &Results, modes: &[Mode], png: &Path, caption: &str) -> Result<()> {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .context("DejaVuSans.ttf (Debian package fonts-dejavu-core)")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("bad font"))?;
    let root = BitMapBackend::new(png, (1400, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&format!("portfwd vs peers — {caption}"), ("sans-serif", 22))?;
    let panels = root.split_evenly((2, 2));
    let specs = [
        (
            "remote",
            "tcp_1_stream_gbps",
            "remote: TCP 1 stream, Gbit/s",
        ),
        ("remote", "connections_per_s", "remote: new connections/s"),
        (
            "local",
            "tcp_1_stream_gbps",
            "host-local: TCP 1 stream, Gbit/s",
        ),
        (
            "local",
            "connections_per_s",
            "host-local: new connections/s",
        ),
    ];
    for (area, (path, metric, title)) in panels.iter().zip(specs) {
        let Some(by_mode) = results.get(path).and_then(|p| p.get(metric)) else {
            continue;
        };
        // IPv4 modes only: nine bars do not fit a panel (IPv6 is in the tables).
        let bars: Vec<(&str, f64)> = modes
            .iter()
            .filter(|m| !m.fwd.ipv6())
            .filter_map(|m| Some((m.name(), median(by_mode.get(m.name())?))))
            .collect();
        let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.2;
        let mut ch = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..bars.len() as f64, 0f64..max)?;
        ch.configure_mesh().disable_x_mesh().x_labels(0).draw()?;
        ch.draw_series(bars.iter().enumerate().map(|(i, (name, v))| {
            let color = if *name == "portfwd" {
                RGBColor(220, 80, 40)
            } else {
                RGBColor(90, 120, 170)
            };
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
                color.filled(),
            )
        }))?;
        ch.draw_series(bars.iter().enumerate().map(|(i, (name, v))| {
            Text::new(
                format!("{name}: {}", fmt(*v)),
                (i as f64 + 0.12, *v + max * 0.06),
                ("sans-serif", 13),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
