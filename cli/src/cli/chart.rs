//! The training chart, `metrics.png` and `metrics.svg`: training and validation loss (left) and
//! accuracy (right) per epoch, drawn with plotters. Text is drawn from a subset of DejaVu Sans
//! shipped in `assets/fonts` (through ab_glyph), so charts need no system fonts, and the same
//! history always gives the same bytes.

use std::io::Cursor;
use std::sync::OnceLock;

use anyhow::Context;
use image::{ImageFormat, RgbImage};
use plotters::backend::RGBPixel;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::checkpoint::EpochRecord;

/// Chart size in pixels.
pub const WIDTH: u32 = 960;
/// Chart height in pixels.
pub const HEIGHT: u32 = 400;

/// DejaVu Sans cut to printable ASCII (licence beside it), registered as plotters' `sans-serif`;
/// an SVG viewer draws the text with its own sans-serif font.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-ASCII.ttf");
const FAMILY: &str = "sans-serif";

const GRID: RGBColor = RGBColor(225, 225, 225);
const AXIS: RGBColor = RGBColor(90, 90, 90);
/// The training curve's colour (matplotlib's first).
pub const TRAIN: RGBColor = RGBColor(31, 119, 180);
/// The validation curve's colour (matplotlib's second).
pub const VAL: RGBColor = RGBColor(255, 127, 14);

/// The chart as PNG bytes.
pub fn png(history: &[EpochRecord]) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    render(history)?
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .context("cannot encode the metrics chart")?;
    Ok(bytes)
}

/// The chart as an RGB bitmap.
pub fn render(history: &[EpochRecord]) -> anyhow::Result<RgbImage> {
    register_font()?;
    let mut pixels = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let backend =
            BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut pixels, (WIDTH, HEIGHT))
                .map_err(|e| anyhow::anyhow!("cannot draw the metrics chart: {e}"))?;
        draw(&backend.into_drawing_area(), history)
            .map_err(|e| anyhow::anyhow!("cannot draw the metrics chart: {e}"))?;
    }
    RgbImage::from_raw(WIDTH, HEIGHT, pixels).context("cannot draw the metrics chart")
}

/// The chart as an SVG document.
pub fn svg(history: &[EpochRecord]) -> anyhow::Result<String> {
    register_font()?;
    let mut text = String::new();
    draw(
        &SVGBackend::with_string(&mut text, (WIDTH, HEIGHT)).into_drawing_area(),
        history,
    )
    .map_err(|e| anyhow::anyhow!("cannot draw the metrics chart: {e}"))?;
    Ok(text)
}

/// Makes the shipped font plotters' `sans-serif`, once per process.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    anyhow::ensure!(registered, "the chart's built-in font cannot be read");
    Ok(())
}

/// One curve: its legend name, colour and `(epoch, value)` points.
type Curve = (&'static str, RGBColor, Vec<(u32, f64)>);

/// Draws both panels on `root`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    history: &[EpochRecord],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let curve = |name, color, value: fn(&EpochRecord) -> f64| -> Curve {
        let points = history
            .iter()
            .map(|r| (r.epoch as u32, value(r)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        (name, color, points)
    };
    let last_epoch = history.last().map_or(1, |r| r.epoch as u32);
    panel(
        &panels[0],
        "loss",
        last_epoch,
        [
            curve("train", TRAIN, |r| r.train_loss),
            curve("val", VAL, |r| r.val_loss),
        ],
        SeriesLabelPosition::UpperRight,
    )?;
    panel(
        &panels[1],
        "accuracy %",
        last_epoch,
        [
            curve("train", TRAIN, |r| 100.0 * r.train_accuracy),
            curve("val", VAL, |r| 100.0 * r.val_accuracy),
        ],
        SeriesLabelPosition::LowerRight,
    )?;
    root.present()
}

/// One panel: title, grid, axes with their ticks, both curves with a dot per epoch, and the
/// legend at `legend` (where the curves are not likely to be).
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    last_epoch: u32,
    curves: [Curve; 2],
    legend: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (lo, hi) = value_range(curves.iter().flat_map(|(_, _, points)| points));
    let last_epoch = last_epoch.max(2);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 22))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(60)
        .build_cartesian_2d(1u32..last_epoch, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(last_epoch.min(10) as usize)
        .y_labels(6)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .bold_line_style(GRID)
        .light_line_style(WHITE)
        .axis_style(AXIS)
        .draw()?;
    for (name, color, points) in curves {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(GRID)
        .draw()
}

/// The value axis: every finite value with a margin of 5% above and below, or a unit span
/// around a constant.
fn value_range<'a>(points: impl Iterator<Item = &'a (u32, f64)>) -> (f64, f64) {
    let (lo, hi) = points.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, v)| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo - 0.05 * span, hi + 0.05 * span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, loss: f64, acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            step: epoch as u64 * 10,
            lr: 0.01,
            train_loss: loss,
            train_accuracy: acc,
            val_loss: loss * 1.1,
            val_accuracy: acc * 0.9,
            seconds: 1.0,
        }
    }

    #[test]
    fn the_value_axis_covers_every_finite_value() {
        let points = [(1, 0.2), (2, f64::NAN), (3, 1.2)];
        let (lo, hi) = value_range(points.iter());
        assert!(
            (lo - 0.15).abs() < 1e-12 && (hi - 1.25).abs() < 1e-12,
            "{lo} {hi}"
        );
        assert_eq!(value_range([(1, 3.0)].iter()), (2.5, 3.5));
        assert_eq!(value_range([(1, f64::NAN)].iter()), (0.0, 1.0));
    }

    #[test]
    fn curves_use_both_colours_and_text_is_drawn() {
        let history = [
            record(1, 1.2, 0.6),
            record(2, 0.8, 0.7),
            record(3, 0.5, 0.8),
        ];
        let img = render(&history).expect("a chart");
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        let count = |color: RGBColor| {
            img.pixels()
                .filter(|p| p.0 == [color.0, color.1, color.2])
                .count()
        };
        assert!(count(TRAIN) > 100 && count(VAL) > 100);
        // Dark, anti-aliased pixels are text: titles, tick labels and legends.
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
        assert!(dark > 500, "{dark} dark pixels");
        assert_eq!(png(&history).expect("a PNG"), png(&history).expect("a PNG"));
    }

    #[test]
    fn the_svg_holds_both_curves_of_both_panels() {
        let svg = svg(&[record(1, 1.2, 0.6), record(2, 0.8, 0.7)]).expect("an SVG");
        assert!(svg.starts_with("<svg"), "{svg}");
        // Each text element's content is a line of its own.
        for text in ["loss", "accuracy %", "epoch", "train", "val"] {
            assert!(
                svg.lines().any(|l| l.trim() == text),
                "no {text} in the SVG"
            );
        }
        for color in ["#1F77B4", "#FF7F0E"] {
            let curves = svg
                .lines()
                .filter(|l| l.contains("<polyline") && l.contains(color))
                .count();
            // One curve per panel, and one legend mark per panel.
            assert_eq!(curves, 4, "{color}");
        }
    }

    #[test]
    fn a_single_epoch_and_non_finite_values_still_draw() {
        let img = render(&[record(1, f64::NAN, 0.5)]).expect("a chart");
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        assert!(png(&[record(1, 0.7, 0.5)]).is_ok_and(|b| b.starts_with(b"\x89PNG")));
    }
}
