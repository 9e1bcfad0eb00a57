//! The heatmap of a similarity matrix (`matrix --plot`).

use std::path::Path;
use std::sync::Once;

use nalgebra::DMatrix;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The embedded font's family name; text needs no system fonts.
const FONT: &str = "sans-serif";

fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans font could not be loaded".to_owned());
    });
    result
}

/// Draws `m` (rows and columns labelled by `labels`, the first model at the
/// top left) with a colour bar over the range of its off-diagonal values,
/// and writes it as a PNG, titled `title`.
pub fn heatmap(
    path: &Path,
    labels: &[String],
    m: &DMatrix<f64>,
    title: &str,
) -> Result<(), String> {
    register_font()?;
    let n = m.nrows();
    if n < 2 {
        return Err("a heatmap needs at least two models".into());
    }
    let cell: u32 = (720 / n.max(1) as u32).clamp(12, 80);
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as u32;
    let label_area = (longest * 8 + 16).clamp(40, 260);
    let bar_area = 130;
    let side = cell * n as u32;
    let width = label_area + side + bar_area + 30;
    // The column labels are rotated; the axis description sits below them.
    let desc_area = 28;
    let height = side + label_area + desc_area + 60;
    let (lo, hi) = range(m);
    // Enough decimals that the colour bar's six ticks differ.
    let digits = ((-((hi - lo) / 5.0).log10()).ceil() as usize).clamp(3, 7);

    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (main, bar) = root.split_horizontally(width - bar_area);

    let mut chart = ChartBuilder::on(&main)
        .caption(title, (FONT, 20))
        .margin(10)
        .x_label_area_size(label_area + desc_area)
        .y_label_area_size(label_area)
        .build_cartesian_2d(segments(n), segments(n))
        .map_err(|e| e.to_string())?;
    // Row 0 at the top: y coordinate n − 1 − i.
    let name = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - i].clone(),
        _ => String::new(),
    };
    let font_size = (cell as f64 * 0.45).clamp(9.0, 15.0);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n)
        .y_labels(n)
        .y_label_formatter(&name)
        .x_label_formatter(&|_| String::new())
        .y_label_style((FONT, font_size))
        .x_desc("model")
        .y_desc("model")
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(|e| e.to_string())?;
    let annotate = n <= 12;
    chart
        .draw_series(
            (0..n)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| {
                    let y = n - 1 - i;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
                        ],
                        colour(m[(i, j)], lo, hi).filled(),
                    )
                }),
        )
        .map_err(|e| e.to_string())?;
    if annotate {
        let text_size = (cell as f64 * 0.22).clamp(9.0, 14.0);
        chart
            .draw_series(
                (0..n)
                    .flat_map(|i| (0..n).map(move |j| (i, j)))
                    .map(|(i, j)| {
                        let v = m[(i, j)];
                        let t = (v - lo) / (hi - lo);
                        let ink: &'static RGBColor = if t > 0.6 { &BLACK } else { &WHITE };
                        Text::new(
                            format!("{v:.3}"),
                            (SegmentValue::CenterOf(j), SegmentValue::CenterOf(n - 1 - i)),
                            TextStyle::from((FONT, text_size).into_font())
                                .color(ink)
                                .pos(Pos::new(HPos::Center, VPos::Center)),
                        )
                    }),
            )
            .map_err(|e| e.to_string())?;
    }

    // Column labels, drawn by hand: rotated mesh labels are misplaced by
    // plotters' layout of transformed text.
    let (x_pixels, y_pixels) = chart.plotting_area().get_pixel_range();
    let rotated = TextStyle::from((FONT, font_size).into_font())
        .transform(FontTransform::Rotate90)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (j, label) in labels.iter().enumerate() {
        let x = x_pixels.start
            + ((2 * j + 1) as i32 * (x_pixels.end - x_pixels.start)) / (2 * n as i32);
        main.draw(&Text::new(
            label.clone(),
            (x, y_pixels.end + 8),
            rotated.clone(),
        ))
        .map_err(|e| e.to_string())?;
    }

    // The colour bar, spanning the heatmap's height: thin rectangles with value ticks.
    let mut scale = ChartBuilder::on(&bar)
        .margin_top(y_pixels.start)
        .margin_bottom(height as i32 - y_pixels.end)
        .margin_right(10)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(|e| e.to_string())?;
    scale
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.digits$}"))
        .y_label_style((FONT, 13))
        .y_desc("similarity")
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(|e| e.to_string())?;
    let steps = 200;
    scale
        .draw_series((0..steps).map(|k| {
            let a = lo + (hi - lo) * k as f64 / steps as f64;
            let b = lo + (hi - lo) * (k + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, a), (1.0, b)], colour((a + b) / 2.0, lo, hi).filled())
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// The narrowest colour scale: values closer than this to 1 (a model
/// against its own `f32` copy) share a colour instead of making an empty
/// scale.
const MIN_SPAN: f64 = 1e-6;

/// The colour scale's range: the finite off-diagonal values (the diagonal
/// is 1 by definition), widened to an interval of at least [`MIN_SPAN`]
/// that includes 1; all of `[0, 1]` when no value is below 1.
fn range(m: &DMatrix<f64>) -> (f64, f64) {
    let n = m.nrows();
    let lo = (0..n)
        .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
        .map(|ij| m[ij])
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::min);
    if lo >= 1.0 {
        (0.0, 1.0)
    } else {
        (lo.min(1.0 - MIN_SPAN), 1.0)
    }
}

/// The colour of `v` on the scale `[lo, hi]`, normalised in `f64` (in
/// `f32`, a narrow scale collapses to a point and the colour map fails).
fn colour(v: f64, lo: f64, hi: f64) -> RGBColor {
    let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
    let t = if t.is_finite() { t as f32 } else { 0.0 };
    ViridisRGB.get_color_normalized(t, 0.0, 1.0)
}

/// `n` unit segments `0..n`, labelled at their centres (plotters' integer
/// ranges are inclusive of their end, so `0..n−1` gives `n` segments).
fn segments(
    n: usize,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..n.saturating_sub(1)).into_segmented()
}
