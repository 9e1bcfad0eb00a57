//! The figure: training curves above, the three similarity matrices below,
//! with the phases marked on both.

use std::error::Error;
use std::path::Path;

use nalgebra::DMatrix;
use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::Ranged;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use crate::phases::{Phase, Phases};
use crate::train::CurvePoint;

/// What the figure shows.
pub struct Figure<'a> {
    /// Title line.
    pub title: String,
    /// Training curves.
    pub curves: &'a [CurvePoint],
    /// Phase boundaries, in steps.
    pub phases: &'a Phases,
    /// The step of each checkpoint (the matrices' rows and columns).
    pub steps: &'a [usize],
    /// `(caption, matrix)` for each heatmap, left to right.
    pub matrices: [(&'a str, &'a DMatrix<f64>); 3],
}

const WIDTH: u32 = 1800;
const HEIGHT: u32 = 1240;
const FONT: &str = "sans-serif";

/// Makes `sans-serif` available to plotters' `ab_glyph` text renderer, which
/// has no system fonts; once per process.
pub fn register_font() -> Result<(), Box<dyn Error>> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font could not be parsed".into())
    }
}

/// Light background colours of the four phases.
fn phase_colour(phase: Phase) -> RGBColor {
    match phase {
        Phase::Memorise => RGBColor(250, 205, 175),
        Phase::Plateau => RGBColor(222, 222, 222),
        Phase::Grok => RGBColor(185, 232, 185),
        Phase::Generalised => RGBColor(185, 210, 245),
    }
}

/// Writes the PNG to `path`.
pub fn draw(fig: &Figure<'_>, path: &Path) -> Result<(), Box<dyn Error>> {
    register_font()?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&fig.title, (FONT, 28))?;
    let (top, bottom) = root.split_vertically(560);
    let curve_areas = top.split_evenly((1, 2));
    draw_loss(fig, &curve_areas[0])?;
    draw_accuracy(fig, &curve_areas[1])?;

    let lo = fig
        .matrices
        .iter()
        .flat_map(|(_, m)| m.iter().copied())
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::min);
    // A common colour scale makes the three matrices comparable; it starts at
    // 0 unless some entry is negative.
    let lo = lo.min(0.0);
    let (maps, bar) = bottom.split_horizontally(WIDTH - 130);
    for (area, (caption, matrix)) in maps.split_evenly((1, 3)).iter().zip(fig.matrices) {
        draw_heatmap(fig, area, caption, matrix, lo)?;
    }
    draw_colour_bar(&bar, lo)?;
    root.present()?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn step_axis(fig: &Figure<'_>) -> (f64, f64) {
    let last = fig.curves.last().map_or(1, |c| c.step).max(2);
    (1.0, last as f64)
}

/// The phase bands behind a curve panel and their names along the top.
fn draw_bands<Y: Ranged<ValueType = f64>>(
    fig: &Figure<'_>,
    chart: &mut ChartContext<'_, BitMapBackend<'_>, Cartesian2d<LogCoord<f64>, Y>>,
    (y0, y1): (f64, f64),
    label_y: [f64; 2],
) -> Result<(), Box<dyn Error>> {
    let (x0, x1) = step_axis(fig);
    for (k, (phase, start, end)) in fig.phases.bands(x1 as usize).into_iter().enumerate() {
        let (a, b) = ((start as f64).max(x0), (end as f64).min(x1));
        if b <= a {
            continue;
        }
        chart.draw_series(std::iter::once(Rectangle::new(
            [(a, y0), (b, y1)],
            phase_colour(phase).filled(),
        )))?;
        use plotters::style::text_anchor::{HPos, Pos, VPos};
        // The last band's name ends at the right edge rather than running off it.
        let (x, h) = if b >= x1 {
            (b, HPos::Right)
        } else {
            ((a * b).sqrt(), HPos::Center)
        };
        chart.draw_series(std::iter::once(Text::new(
            phase.name(),
            // Alternate rows so that narrow neighbouring bands keep their names apart.
            (x, label_y[k % 2]),
            (FONT, 17)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(h, VPos::Top)),
        )))?;
    }
    Ok(())
}

fn draw_loss(fig: &Figure<'_>, area: &Area<'_>) -> Result<(), Box<dyn Error>> {
    let (x0, x1) = step_axis(fig);
    let losses = || fig.curves.iter().flat_map(|c| [c.train.loss, c.test.loss]);
    let hi = losses().fold(1e-12f64, f64::max) * 12.0;
    let lo = losses().filter(|&l| l > 0.0).fold(hi, f64::min).max(1e-9) / 3.0;
    let mut chart = ChartBuilder::on(area)
        .caption("cross-entropy", (FONT, 22))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((x0..x1).log_scale(), (lo..hi).log_scale())?;
    draw_bands(fig, &mut chart, (lo, hi), [hi, hi / 3.0])?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (nats)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (name, colour, get) in [
        (
            "train",
            BLUE,
            (|c: &CurvePoint| c.train.loss) as fn(&CurvePoint) -> f64,
        ),
        ("held-out", RED, |c: &CurvePoint| c.test.loss),
    ] {
        chart
            .draw_series(std::iter::once(PathElement::new(
                fig.curves
                    .iter()
                    .filter(|c| c.step >= 1)
                    .map(|c| (c.step as f64, get(c).max(lo)))
                    .collect::<Vec<_>>(),
                colour.stroke_width(3),
            )))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FONT, 17))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_accuracy(fig: &Figure<'_>, area: &Area<'_>) -> Result<(), Box<dyn Error>> {
    let (x0, x1) = step_axis(fig);
    let mut chart = ChartBuilder::on(area)
        .caption("accuracy", (FONT, 22))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), 0.0..1.16)?;
    draw_bands(fig, &mut chart, (0.0, 1.16), [1.16, 1.11])?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("accuracy")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (name, colour, get) in [
        (
            "train",
            BLUE,
            (|c: &CurvePoint| c.train.accuracy) as fn(&CurvePoint) -> f64,
        ),
        ("held-out", RED, |c: &CurvePoint| c.test.accuracy),
    ] {
        chart
            .draw_series(std::iter::once(PathElement::new(
                fig.curves
                    .iter()
                    .filter(|c| c.step >= 1)
                    .map(|c| (c.step as f64, get(c)))
                    .collect::<Vec<_>>(),
                colour.stroke_width(3),
            )))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleLeft)
        .label_font((FONT, 17))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_heatmap(
    fig: &Figure<'_>,
    area: &Area<'_>,
    caption: &str,
    matrix: &DMatrix<f64>,
    lo: f64,
) -> Result<(), Box<dyn Error>> {
    let n = matrix.nrows();
    let nf = n as f64;
    // A strip of phase colours along the top and left edges, as in the curves.
    let strip = 0.04 * nf;
    let label = |v: &f64| {
        let i = v.floor().clamp(0.0, nf - 1.0) as usize;
        fig.steps[i].to_string()
    };
    // Rows run top to bottom: y = n − i.
    let row_label = |v: &f64| label(&(nf - v));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(14)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(-strip..nf, 0.0..nf + strip)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_desc("checkpoint step")
        .y_desc("checkpoint step")
        .x_label_formatter(&label)
        .y_label_formatter(&row_label)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;
    chart.draw_series(
        (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| {
                let v = matrix[(i, j)];
                let colour = if v.is_finite() {
                    ViridisRGB.get_color_normalized(v, lo, 1.0)
                } else {
                    RGBColor(255, 0, 255)
                };
                let y = nf - i as f64;
                Rectangle::new([(j as f64, y - 1.0), (j as f64 + 1.0, y)], colour.filled())
            }),
    )?;
    let last = fig.steps.last().copied().unwrap_or(0);
    let bands = fig.phases.bands(last);
    let phase_of = |step: usize| {
        bands
            .iter()
            .rev()
            .find(|(_, start, _)| step >= *start)
            .map_or(Phase::Memorise, |b| b.0)
    };
    chart.draw_series(fig.steps.iter().enumerate().flat_map(|(k, &step)| {
        let colour = phase_colour(phase_of(step)).filled();
        let (k, y) = (k as f64, nf - k as f64);
        [
            Rectangle::new([(k, nf + 0.2 * strip), (k + 1.0, nf + strip)], colour),
            Rectangle::new([(-strip, y - 1.0), (-0.2 * strip, y)], colour),
        ]
    }))?;
    for boundary in fig.phases.boundaries() {
        if let Some(k) = fig.steps.iter().position(|&s| s >= boundary) {
            let k = k as f64;
            let style = WHITE.mix(0.9).stroke_width(2);
            chart.draw_series([
                PathElement::new([(k, 0.0), (k, nf)], style),
                PathElement::new([(0.0, nf - k), (nf, nf - k)], style),
            ])?;
        }
    }
    Ok(())
}

fn draw_colour_bar(area: &Area<'_>, lo: f64) -> Result<(), Box<dyn Error>> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(52)
        .margin_bottom(64)
        .margin_right(10)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..1.0, lo..1.0)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style((FONT, 15))
        .draw()?;
    let steps = 200;
    chart.draw_series((0..steps).map(|k| {
        let a = lo + (1.0 - lo) * k as f64 / steps as f64;
        let b = lo + (1.0 - lo) * (k + 1) as f64 / steps as f64;
        Rectangle::new(
            [(0.0, a), (1.0, b)],
            ViridisRGB.get_color_normalized(a, lo, 1.0).filled(),
        )
    }))?;
    Ok(())
}
