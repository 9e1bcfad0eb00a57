//! The figures: panels of curves against the training step above, a grid
//! of similarity matrices below, the stages (or phases) shaded on the
//! curves and marked on the matrices.

use std::error::Error;
use std::path::Path;

use nalgebra::DMatrix;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const WIDTH: u32 = 1500;
const CURVE_HEIGHT: u32 = 440;
const COLOUR_BAR: u32 = 120;
const FONT: &str = "sans-serif";

/// A stage of the run: steps `start + 1 ..= end`.
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    /// Its name on the figure.
    pub name: String,
    /// The step before its first.
    pub start: usize,
    /// Its last step.
    pub end: usize,
}

/// One curve: a value at each checkpoint.
#[derive(Clone, Debug)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// One value per checkpoint (`NaN`: no point).
    pub values: Vec<f64>,
    /// Its colour, an index into the palette.
    pub colour: usize,
    /// Drawn thinner (a second family of curves in one panel).
    pub thin: bool,
}

impl Series {
    /// A solid curve.
    pub fn new(name: impl Into<String>, values: Vec<f64>, colour: usize) -> Self {
        Self {
            name: name.into(),
            values,
            colour,
            thin: false,
        }
    }

    /// The same curve, thinner.
    pub fn thin(self) -> Self {
        Self { thin: true, ..self }
    }
}

/// A panel of curves.
#[derive(Clone, Debug)]
pub struct Curves {
    /// Caption above the panel.
    pub caption: String,
    /// The y axis' range.
    pub y_range: (f64, f64),
    /// The curves.
    pub series: Vec<Series>,
    /// Where the legend goes.
    pub legend: SeriesLabelPosition,
}

impl Curves {
    /// A panel whose y axis runs from the smallest value rounded down to a
    /// tenth (at most 0.9) to the largest rounded up (at least 1).
    pub fn fitted(caption: impl Into<String>, series: Vec<Series>) -> Self {
        let finite = || {
            series
                .iter()
                .flat_map(|s| s.values.iter().copied())
                .filter(|v| v.is_finite())
        };
        let lo = finite().fold(0.9f64, f64::min);
        let hi = finite().fold(1.0f64, f64::max);
        Self {
            caption: caption.into(),
            y_range: ((lo * 10.0).floor() / 10.0, (hi * 10.0).ceil() / 10.0 + 0.01),
            series,
            legend: SeriesLabelPosition::LowerLeft,
        }
    }

    /// The same panel with its legend at `legend`.
    pub fn legend(self, legend: SeriesLabelPosition) -> Self {
        Self { legend, ..self }
    }
}

/// What a figure shows.
#[derive(Debug)]
pub struct Figure<'a> {
    /// Title line.
    pub title: String,
    /// The checkpoints' steps: the curves' x values, the matrices' rows
    /// and columns.
    pub steps: &'a [usize],
    /// The stages, in order.
    pub bands: &'a [Band],
    /// Panels of curves, side by side in the top row (none: no row).
    pub curves: Vec<Curves>,
    /// `(caption, matrix)` of each heatmap, row by row below.
    pub heatmaps: Vec<(String, &'a DMatrix<f64>)>,
    /// Heatmaps per row.
    pub heatmap_columns: usize,
}

/// Makes `sans-serif` available to plotters' `ab_glyph` text renderer,
/// which has no system fonts; once per process.
fn register_font() -> Result<(), Box<dyn Error>> {
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

/// Distinct line colours (Tableau 10, then darker shades).
pub fn palette(k: usize) -> RGBColor {
    const COLOURS: [RGBColor; 12] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(0, 0, 0),
        RGBColor(90, 60, 20),
    ];
    COLOURS[k % COLOURS.len()]
}

/// Light background colours of the stages, in turn.
fn band_colour(k: usize) -> RGBColor {
    const COLOURS: [RGBColor; 4] = [
        RGBColor(222, 235, 247),
        RGBColor(253, 224, 200),
        RGBColor(225, 242, 218),
        RGBColor(236, 226, 240),
    ];
    COLOURS[k % COLOURS.len()]
}

/// Writes the PNG to `path`.
pub fn draw(fig: &Figure<'_>, path: &Path) -> Result<(), Box<dyn Error>> {
    register_font()?;
    let columns = fig.heatmap_columns.max(1);
    let map_rows = fig.heatmaps.len().div_ceil(columns) as u32;
    let cell = (WIDTH - COLOUR_BAR) / columns as u32;
    let top = if fig.curves.is_empty() {
        0
    } else {
        CURVE_HEIGHT
    };
    let height = 50 + top + map_rows * cell;
    let mut pixels = vec![0u8; (WIDTH * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, height)).into_drawing_area();
        render(fig, root, top, cell, map_rows, columns)?;
    }
    write_png(path, &pixels, (WIDTH, height))
}

/// RGB pixels as a PNG with the best compression and adaptive filters:
/// about half the size of plotters' default encoding, so that the copies
/// kept in docs/ stay small.
fn write_png(path: &Path, rgb: &[u8], (width, height): (u32, u32)) -> Result<(), Box<dyn Error>> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Best);
    encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}

fn render(
    fig: &Figure<'_>,
    root: Area<'_>,
    top: u32,
    cell: u32,
    map_rows: u32,
    columns: usize,
) -> Result<(), Box<dyn Error>> {
    root.fill(&WHITE)?;
    let root = root.titled(&fig.title, (FONT, 26))?;
    let (upper, lower) = root.split_vertically(top);
    if !fig.curves.is_empty() {
        for (area, panel) in upper
            .split_evenly((1, fig.curves.len()))
            .iter()
            .zip(&fig.curves)
        {
            draw_curves(fig, area, panel)?;
        }
    }
    if fig.heatmaps.is_empty() {
        root.present()?;
        return Ok(());
    }
    // One colour scale for every matrix of the figure, from the smallest
    // entry rounded down to a tenth (at most 0.9) to 1.
    let lo = fig
        .heatmaps
        .iter()
        .flat_map(|(_, m)| m.iter().copied())
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::min);
    let lo = ((lo * 10.0).floor() / 10.0).min(0.9);
    let (maps, bar) = lower.split_horizontally(cell * columns as u32);
    let areas = maps.split_evenly((map_rows as usize, columns));
    for (area, (caption, matrix)) in areas.iter().zip(&fig.heatmaps) {
        draw_heatmap(fig, area, caption, matrix, lo)?;
    }
    draw_colour_bar(&bar, lo)?;
    root.present()?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_curves(fig: &Figure<'_>, area: &Area<'_>, panel: &Curves) -> Result<(), Box<dyn Error>> {
    let x1 = fig.steps.last().copied().unwrap_or(1).max(1) as f64;
    let (y0, y1) = panel.y_range;
    // A strip above the data for the stages' names.
    let top = y1 + 0.09 * (y1 - y0);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x1, y0..top)?;
    for (k, band) in fig.bands.iter().enumerate() {
        let (a, b) = (band.start as f64, band.end as f64);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(a, y0), (b, top)],
            band_colour(k).filled(),
        )))?;
        // Alternate two rows so that narrow neighbours keep their names apart.
        let y = top - (top - y1) * if k % 2 == 0 { 0.05 } else { 0.5 };
        chart.draw_series(std::iter::once(Text::new(
            band.name.clone(),
            (0.5 * (a + b), y),
            (FONT, 15)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        )))?;
    }
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        // Snap to zero so that a tick at −1e-17 does not read "-0.0".
        .y_label_formatter(&|v| format!("{:.1}", if v.abs() < 1e-9 { 0.0 } else { *v }))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for s in &panel.series {
        let colour = palette(s.colour);
        let style = colour.stroke_width(if s.thin { 2 } else { 3 });
        let points: Vec<(f64, f64)> = fig
            .steps
            .iter()
            .zip(&s.values)
            .filter(|(_, v)| v.is_finite())
            .map(|(&x, &v)| (x as f64, v.clamp(y0, y1)))
            .collect();
        chart
            .draw_series(std::iter::once(PathElement::new(points.clone(), style)))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, if s.thin { 2 } else { 3 }, colour.filled())),
        )?;
    }
    // A legend at the top starts below the strip of stage names.
    let position = match &panel.legend {
        SeriesLabelPosition::UpperLeft => {
            let (_, h) = chart.plotting_area().dim_in_pixel();
            let strip = (f64::from(h) * (top - y1) / (top - y0)).ceil() as i32;
            SeriesLabelPosition::Coordinate(6, strip + 6)
        }
        other => other.clone(),
    };
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The index of the first checkpoint of each band after the first.
fn band_starts(fig: &Figure<'_>) -> Vec<usize> {
    fig.bands
        .iter()
        .skip(1)
        .filter_map(|b| fig.steps.iter().position(|&s| s > b.start))
        .collect()
}

fn band_of(fig: &Figure<'_>, step: usize) -> usize {
    fig.bands
        .iter()
        .position(|b| step <= b.end)
        .unwrap_or(fig.bands.len().saturating_sub(1))
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
    // A strip of stage colours along the top and left edges.
    let strip = 0.04 * nf;
    let label = |v: &f64| {
        let i = v.floor().clamp(0.0, nf - 1.0) as usize;
        fig.steps.get(i).map_or(String::new(), usize::to_string)
    };
    // Rows run top to bottom: y = n − i.
    let row_label = |v: &f64| label(&(nf - v));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-strip..nf, 0.0..nf + strip)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&label)
        .y_label_formatter(&row_label)
        .label_style((FONT, 13))
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
    chart.draw_series(fig.steps.iter().enumerate().flat_map(|(k, &step)| {
        let colour = band_colour(band_of(fig, step)).filled();
        let (k, y) = (k as f64, nf - k as f64);
        [
            Rectangle::new([(k, nf + 0.2 * strip), (k + 1.0, nf + strip)], colour),
            Rectangle::new([(-strip, y - 1.0), (-0.2 * strip, y)], colour),
        ]
    }))?;
    for k in band_starts(fig) {
        let k = k as f64;
        let style = WHITE.stroke_width(2);
        chart.draw_series([
            PathElement::new([(k, 0.0), (k, nf)], style),
            PathElement::new([(0.0, nf - k), (nf, nf - k)], style),
        ])?;
    }
    Ok(())
}

fn draw_colour_bar(area: &Area<'_>, lo: f64) -> Result<(), Box<dyn Error>> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(50)
        .margin_right(10)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..1.0, lo..1.0)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style((FONT, 14))
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
