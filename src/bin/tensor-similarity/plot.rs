//! The heatmap of a similarity matrix (`matrix --plot`): a diverging
//! colour scale fixed on `[−1, 1]` with white at 0 ([`colour`]), and a
//! title that states what was compared ([`title`]).

use std::path::Path;
use std::sync::Once;

use nalgebra::DMatrix;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
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

/// The heatmap's title: the metric, the context the models were compared
/// at (sequence models) or that they are vector models, the outputs
/// compared when not all (`outputs [3, 9]`, `output 9`), and the precision
/// when it is not the default `f64`. Without `--outputs` the command line
/// compares every output at every position of the context, so the context
/// is what selects the compared part.
pub fn title(
    metric: &str,
    context: Option<usize>,
    outputs: Option<&str>,
    precision: Option<&str>,
) -> String {
    let mut title = format!("{metric} similarity");
    match context {
        Some(n) => title.push_str(&format!(", context {n}")),
        None => title.push_str(", vector models"),
    }
    if let Some(o) = outputs {
        title.push_str(&format!(", {o}"));
    }
    if let Some(p) = precision {
        title.push_str(&format!(", {p}"));
    }
    title
}

/// One matrix of a figure: its cells, their labels and axis names, and a
/// caption above it.
pub struct Panel {
    /// Row labels, top to bottom.
    pub rows: Vec<String>,
    /// Column labels, left to right.
    pub columns: Vec<String>,
    /// The values, `rows × columns` (NaN: no value, drawn grey).
    pub values: DMatrix<f64>,
    /// Shown above the panel (empty: none).
    pub caption: String,
    /// The rows' axis name.
    pub row_axis: String,
    /// The columns' axis name.
    pub column_axis: String,
}

/// Draws `m` (rows and columns labelled by `labels`, the first model at the
/// top left) on the fixed diverging scale of [`colour`], with a colour bar
/// from −1 to 1, and writes it as a PNG, titled `title`.
pub fn heatmap(
    path: &Path,
    labels: &[String],
    m: &DMatrix<f64>,
    title: &str,
) -> Result<(), String> {
    if m.nrows() < 2 {
        return Err("a heatmap needs at least two models".into());
    }
    panels(
        path,
        &[Panel {
            rows: labels.to_vec(),
            columns: labels.to_vec(),
            values: m.clone(),
            caption: String::new(),
            row_axis: "model".into(),
            column_axis: "model".into(),
        }],
        title,
    )
}

/// Draws the panels side by side on the fixed diverging scale of
/// [`colour`] (one cell size for all), with one colour bar from −1 to 1,
/// and writes them as a PNG, titled `title`.
pub fn panels(path: &Path, panels: &[Panel], title: &str) -> Result<(), String> {
    register_font()?;
    let largest = panels
        .iter()
        .map(|p| p.values.nrows().max(p.values.ncols()))
        .max()
        .unwrap_or(1)
        .max(1);
    let cell: u32 = (720 / largest as u32).clamp(12, 80);
    let longest = panels
        .iter()
        .flat_map(|p| p.rows.iter().chain(&p.columns))
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1) as u32;
    let label_area = (longest * 8 + 16).clamp(40, 260);
    let bar_area = 130;
    let tallest = panels.iter().map(|p| p.values.nrows()).max().unwrap_or(1) as u32;
    // The column labels are rotated; the axis description sits below them.
    let desc_area = 28;
    let caption_area = 60;
    let height = cell * tallest + label_area + desc_area + caption_area;
    let widths: Vec<u32> = panels
        .iter()
        .map(|p| label_area + 20 + cell * p.values.ncols() as u32 + 20)
        .collect();
    let width = widths.iter().sum::<u32>() + bar_area + 10;

    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, (FONT, 20)).map_err(|e| e.to_string())?;
    let (mut rest, bar) = root.split_horizontally(width - bar_area);
    let mut plot_rows = 0..0;
    for (panel, &w) in panels.iter().zip(&widths) {
        let (area, right) = rest.split_horizontally(w);
        rest = right;
        plot_rows = draw_panel(&area, panel, cell, label_area, desc_area, tallest)?;
    }

    // The colour bar, spanning the panels' height: thin rectangles with
    // ticks at −1, −0.5, 0, 0.5 and 1, whatever the values.
    let (_, bar_height) = bar.dim_in_pixel();
    let top = plot_rows.start - bar.get_base_pixel().1;
    let mut scale = ChartBuilder::on(&bar)
        .margin_top(top.max(0))
        .margin_bottom((bar_height as i32 - (plot_rows.end - bar.get_base_pixel().1)).max(0))
        .margin_right(10)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..1.0, -1.0..1.0)
        .map_err(|e| e.to_string())?;
    scale
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        // Five ticks on [−1, 1]: plotters' steps of 0.5.
        .y_labels(5)
        .y_label_formatter(&|v| tick(*v))
        .y_label_style((FONT, 13))
        .y_desc("similarity")
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(|e| e.to_string())?;
    let steps = 200;
    scale
        .draw_series((0..steps).map(|k| {
            let a = -1.0 + 2.0 * k as f64 / steps as f64;
            let b = -1.0 + 2.0 * (k + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, a), (1.0, b)], colour((a + b) / 2.0).filled())
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// One panel on `area`, its cells `cell` pixels wide, the rows aligned to
/// the top as if `tallest` rows were drawn; returns the pixel rows of its
/// cells.
fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    cell: u32,
    label_area: u32,
    desc_area: u32,
    tallest: u32,
) -> Result<std::ops::Range<i32>, String> {
    let (rows, cols) = panel.values.shape();
    let (_, height) = area.dim_in_pixel();
    let spare = height.saturating_sub(cell * tallest + label_area + desc_area + 30);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.caption, (FONT, 16))
        .margin(10)
        .margin_bottom(10 + cell * (tallest - rows as u32) + spare.saturating_sub(30))
        .x_label_area_size(label_area + desc_area)
        .y_label_area_size(label_area)
        .build_cartesian_2d(segments(cols), segments(rows))
        .map_err(|e| e.to_string())?;
    // Row 0 at the top: y coordinate rows − 1 − i.
    let name = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < rows => panel.rows[rows - 1 - i].clone(),
        _ => String::new(),
    };
    let font_size = (cell as f64 * 0.45).clamp(9.0, 15.0);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(cols)
        .y_labels(rows)
        .y_label_formatter(&name)
        .x_label_formatter(&|_| String::new())
        .y_label_style((FONT, font_size))
        .x_desc(panel.column_axis.as_str())
        .y_desc(panel.row_axis.as_str())
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(|e| e.to_string())?;
    let cells = || (0..rows).flat_map(move |i| (0..cols).map(move |j| (i, j)));
    chart
        .draw_series(cells().map(|(i, j)| {
            let y = rows - 1 - i;
            Rectangle::new(
                [
                    (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
                ],
                colour(panel.values[(i, j)]).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    if rows.max(cols) <= 12 {
        let text_size = (cell as f64 * 0.22).clamp(9.0, 14.0);
        chart
            .draw_series(cells().map(|(i, j)| {
                let v = panel.values[(i, j)];
                // Dark ink on the light middle of the scale, white on its
                // dark ends; a dash where there is no value.
                let ink: &'static RGBColor = if v.abs() <= 0.6 { &BLACK } else { &WHITE };
                let text = if v.is_nan() {
                    "—".to_owned()
                } else {
                    format!("{v:.3}")
                };
                Text::new(
                    text,
                    (
                        SegmentValue::CenterOf(j),
                        SegmentValue::CenterOf(rows - 1 - i),
                    ),
                    TextStyle::from((FONT, text_size).into_font())
                        .color(ink)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                )
            }))
            .map_err(|e| e.to_string())?;
    }

    // Column labels, drawn by hand: rotated mesh labels are misplaced by
    // plotters' layout of transformed text.
    let (x_pixels, y_pixels) = chart.plotting_area().get_pixel_range();
    let rotated = TextStyle::from((FONT, font_size).into_font())
        .transform(FontTransform::Rotate90)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let base = area.get_base_pixel();
    for (j, label) in panel.columns.iter().enumerate() {
        let x = x_pixels.start
            + ((2 * j + 1) as i32 * (x_pixels.end - x_pixels.start)) / (2 * cols as i32);
        area.draw(&Text::new(
            label.clone(),
            (x - base.0, y_pixels.end + 8 - base.1),
            rotated.clone(),
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(y_pixels)
}

/// A colour bar tick, to two decimals at most: `-1`, `-0.5`, `0`, `0.5`,
/// `1` (never `-0` or `0.5000000000000001`).
fn tick(v: f64) -> String {
    let v = (v * 100.0).round() / 100.0;
    if v == 0.0 { "0".into() } else { format!("{v}") }
}

/// The diverging scale's anchors at −1, −0.5, 0, 0.5 and 1: ColorBrewer's
/// RdBu (matplotlib's `RdBu_r`, as the research figures draw a signed
/// similarity), blue for negative, near-white at 0, red for positive.
/// Between them the colour is interpolated linearly, so that the red
/// channel minus the blue one rises with the value all along the scale.
const ANCHORS: [(f64, [u8; 3]); 5] = [
    (-1.0, [0x21, 0x66, 0xac]),
    (-0.5, [0x92, 0xc5, 0xde]),
    (0.0, [0xf7, 0xf7, 0xf7]),
    (0.5, [0xf4, 0xa5, 0x82]),
    (1.0, [0xb2, 0x18, 0x2b]),
];

/// The colour of a non-finite value: a mid grey, the colour of no value
/// on the scale.
const NOT_A_VALUE: RGBColor = RGBColor(0x80, 0x80, 0x80);

/// The colour of the similarity `v` on the fixed scale `[−1, 1]` (never
/// rescaled to the values drawn, so that a colour always means the same
/// similarity): [`ANCHORS`] interpolated, values beyond ±1 (rounding) at
/// the ends.
pub fn colour(v: f64) -> RGBColor {
    if !v.is_finite() {
        return NOT_A_VALUE;
    }
    let v = v.clamp(-1.0, 1.0);
    let k = ANCHORS
        .windows(2)
        .position(|w| v <= w[1].0)
        .unwrap_or(ANCHORS.len() - 2);
    let ((x0, c0), (x1, c1)) = (ANCHORS[k], ANCHORS[k + 1]);
    let t = (v - x0) / (x1 - x0);
    let channel = |i: usize| {
        let (a, b) = (f64::from(c0[i]), f64::from(c1[i]));
        (a + (b - a) * t).round().clamp(0.0, 255.0) as u8
    };
    RGBColor(channel(0), channel(1), channel(2))
}

/// `n` unit segments `0..n`, labelled at their centres (plotters' integer
/// ranges are inclusive of their end, so `0..n−1` gives `n` segments).
fn segments(
    n: usize,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..n.saturating_sub(1)).into_segmented()
}

#[cfg(test)]
mod tests {
    use super::{ANCHORS, NOT_A_VALUE, colour, tick, title};
    use plotters::style::RGBColor;

    fn rgb(c: RGBColor) -> [i32; 3] {
        [i32::from(c.0), i32::from(c.1), i32::from(c.2)]
    }

    #[test]
    fn the_title_states_the_metric_the_context_the_outputs_and_the_precision() {
        assert_eq!(
            title("tensor", Some(8), None, None),
            "tensor similarity, context 8"
        );
        assert_eq!(
            title("gaussian", Some(4), None, Some("f32")),
            "gaussian similarity, context 4, f32"
        );
        assert_eq!(
            title("weight", None, None, None),
            "weight similarity, vector models"
        );
        assert_eq!(
            title("tensor", None, Some("outputs [3, 9]"), Some("f32")),
            "tensor similarity, vector models, outputs [3, 9], f32"
        );
    }

    #[test]
    fn minus_one_zero_and_one_are_the_ends_and_the_middle() {
        let [(_, blue), _, (_, white), _, (_, red)] = ANCHORS;
        assert_eq!(rgb(colour(-1.0)), blue.map(i32::from));
        assert_eq!(rgb(colour(0.0)), white.map(i32::from));
        assert_eq!(rgb(colour(1.0)), red.map(i32::from));
        // Blue below zero, red above, light in the middle.
        let [r, _, b] = rgb(colour(-1.0));
        assert!(b > r + 100, "{r} {b}");
        let [r, _, b] = rgb(colour(1.0));
        assert!(r > b + 100, "{r} {b}");
        assert!(rgb(colour(0.0)).iter().all(|&c| c >= 0xe0));
    }

    #[test]
    fn the_scale_is_monotone_and_symmetric_in_lightness() {
        // Red minus blue rises strictly from −1 to 1; lightness rises to 0
        // and falls after it, so −0.5 is never "low but positive".
        let steps = 400;
        let values: Vec<f64> = (0..=steps)
            .map(|k| -1.0 + 2.0 * k as f64 / steps as f64)
            .collect();
        let warmth = |v: f64| {
            let [r, _, b] = rgb(colour(v));
            r - b
        };
        let light = |v: f64| rgb(colour(v)).iter().sum::<i32>();
        for w in values.windows(2) {
            // Each channel is rounded to an integer: the difference of two
            // may step back by one where it rises slowly.
            assert!(warmth(w[1]) >= warmth(w[0]) - 1, "{} {}", w[0], w[1]);
            // Every channel moves one way within a segment: exactly monotone.
            if w[1] <= 0.0 {
                assert!(light(w[1]) >= light(w[0]), "{} {}", w[0], w[1]);
            } else if w[0] >= 0.0 {
                assert!(light(w[1]) <= light(w[0]), "{} {}", w[0], w[1]);
            }
        }
        // Strictly, a tenth apart (at least 4 units, more than rounding).
        let tenths: Vec<f64> = (0..=20).map(|k| -1.0 + 0.1 * k as f64).collect();
        for w in tenths.windows(2) {
            assert!(warmth(w[1]) > warmth(w[0]) + 2, "{} {}", w[0], w[1]);
        }
        assert!(warmth(-0.5) < 0 && warmth(0.5) > 0);
        assert!(warmth(-0.05) < warmth(0.0) && warmth(0.0) < warmth(0.05));
    }

    #[test]
    fn values_are_not_rescaled_to_the_data() {
        // The colour of a value depends on the value alone: 0.9 and 0.95
        // are two light reds of a fixed scale, not the two ends of it.
        assert_ne!(rgb(colour(0.9)), rgb(colour(1.0)));
        assert_ne!(rgb(colour(0.9)), rgb(colour(-1.0)));
        let [r, _, b] = rgb(colour(0.9));
        assert!(r > b);
        // Rounding beyond ±1 is at the ends; a non-finite value is grey.
        assert_eq!(rgb(colour(1.0 + 1e-12)), rgb(colour(1.0)));
        assert_eq!(rgb(colour(-2.0)), rgb(colour(-1.0)));
        assert_eq!(rgb(colour(f64::NAN)), rgb(NOT_A_VALUE));
    }

    #[test]
    fn the_colour_bar_ticks_read_plainly() {
        let ticks: Vec<String> = [-1.0, -0.5, -0.0, 0.5 + 1e-15, 1.0]
            .into_iter()
            .map(tick)
            .collect();
        assert_eq!(ticks, ["-1", "-0.5", "0", "0.5", "1"]);
    }
}
