//! Line charts for `anytime --plot` and `plot`, with plotters: PNG through its bitmap
//! backend, SVG through its SVG backend, chosen by the file's extension.
//!
//! Text needs a font. plotters' `ttf` feature would link fontconfig and FreeType at build
//! time; we use its `ab_glyph` feature instead and load one TrueType file at run time:
//! `$FRACTALNET_FONT`, else the first of a few standard Debian/Fedora/Arch paths (Debian's
//! `fonts-dejavu-core`). Without one (or with `FRACTALNET_FONT=none`) the chart is drawn
//! without text: axes, grid, lines and points only, and a note on stderr says so.

use super::{CliError, CliResult};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Registers the font once; whether text can be drawn.
fn font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = match std::env::var_os("FRACTALNET_FONT") {
            Some(v) if v == "none" => Vec::new(),
            Some(v) => vec![PathBuf::from(v)],
            None => FONT_PATHS.iter().map(PathBuf::from).collect(),
        };
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        eprintln!("note: no TrueType font found (set FRACTALNET_FONT=path.ttf); drawing the chart without text");
        false
    })
}

/// One line of a panel, with a marker at every point.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Dashed lines for secondary series (e.g. training loss next to validation loss).
    pub dashed: bool,
    /// Text next to each point (e.g. "column 2"), when not empty.
    pub point_labels: Vec<String>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            dashed: false,
            point_labels: Vec::new(),
        }
    }
}

pub struct Panel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// A vertical marker line at x, with its label (e.g. a latency deadline).
    pub vline: Option<(f64, String)>,
    /// Put the legend in the lower right corner (curves that rise) instead of the upper right.
    pub legend_lower: bool,
    /// Labelled ticks on the x axis (plotters picks when None).
    pub x_ticks: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Svg,
}

fn format_of(path: &Path) -> CliResult<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => Err(CliError::Usage(format!(
            "{}: the chart file must end in .png or .svg",
            path.display()
        ))),
    }
}

/// Checks the file name before any work is done.
pub fn check_path(path: &Path) -> CliResult<()> {
    format_of(path).map(|_| ())
}

/// Draws `panels` side by side into `path` (.png or .svg).
pub fn draw(path: &Path, panels: &[Panel]) -> CliResult<()> {
    let size = (640 * panels.len().max(1) as u32, 480);
    let text = font();
    let err =
        |e: String| CliError::Usage(format!("{}: cannot draw the chart: {e}", path.display()));
    match format_of(path)? {
        Format::Png => draw_on(
            BitMapBackend::new(path, size).into_drawing_area(),
            panels,
            text,
        )
        .map_err(err),
        Format::Svg => draw_on(
            SVGBackend::new(path, size).into_drawing_area(),
            panels,
            text,
        )
        .map_err(err),
    }
}

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        lo.abs().max(1.0) * 0.1
    };
    (lo - pad, hi + pad)
}

fn draw_on<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
    text: bool,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(&areas) {
        let xs = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(panel.vline.as_ref().map(|v| v.0));
        let (x0, mut x1) = range(xs);
        if text && panel.series.iter().any(|s| !s.point_labels.is_empty()) {
            x1 += (x1 - x0) * 0.2; // room for the labels right of the last points
        }
        let (y0, y1) = range(
            panel
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1)),
        );
        let mut builder = ChartBuilder::on(area);
        builder.margin(16);
        if text {
            builder
                .caption(&panel.title, ("sans-serif", 20))
                .x_label_area_size(42)
                .y_label_area_size(60);
        }
        let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(e)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(panel.x_desc.as_str())
                .y_desc(panel.y_desc.as_str())
                .label_style(("sans-serif", 13));
        }
        if let Some(n) = panel.x_ticks {
            mesh.x_labels(n);
        }
        mesh.draw().map_err(e)?;
        if let Some((x, label)) = &panel.vline {
            let style = ShapeStyle::from(&RED).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(vec![(*x, y0), (*x, y1)], 6, 4, style))
                .map_err(e)?;
            if text {
                chart
                    .draw_series(std::iter::once(Text::new(
                        label.clone(),
                        (*x, y1),
                        ("sans-serif", 13).into_font().color(&RED),
                    )))
                    .map_err(e)?;
            }
        }
        for (i, s) in panel.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let style = ShapeStyle::from(&color).stroke_width(2);
            let legend = move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style);
            if s.dashed {
                chart
                    .draw_series(DashedLineSeries::new(s.points.clone(), 8, 5, style))
                    .map_err(e)?
                    .label(&s.name)
                    .legend(legend);
            } else {
                chart
                    .draw_series(LineSeries::new(s.points.clone(), style))
                    .map_err(e)?
                    .label(&s.name)
                    .legend(legend);
            }
            chart
                .draw_series(s.points.iter().map(|p| Circle::new(*p, 3, style.filled())))
                .map_err(e)?;
            if text {
                let labels = s
                    .points
                    .iter()
                    .zip(&s.point_labels)
                    .map(|(p, l)| Text::new(l.clone(), *p, ("sans-serif", 13)));
                chart.draw_series(labels).map_err(e)?;
            }
        }
        if text && panel.series.len() > 1 {
            chart
                .configure_series_labels()
                .position(if panel.legend_lower {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperRight
                })
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(e)?;
        }
    }
    root.present().map_err(e)
}
