//! `metrics.png`: training and validation loss and accuracy per epoch, drawn straight into an RGB
//! bitmap with a built-in 5x7 pixel font, so charts need no system fonts and the same history
//! always gives the same bytes.

use std::io::Cursor;

use anyhow::Context;
use image::{ImageFormat, Rgb, RgbImage};

use super::checkpoint::EpochRecord;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 400;
const PANEL: u32 = WIDTH / 2;
const MARGIN_LEFT: f64 = 78.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 44.0;
const MARGIN_BOTTOM: f64 = 52.0;
/// Pixels per font pixel.
const SCALE: u32 = 2;

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([90, 90, 90]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const TEXT: Rgb<u8> = Rgb([30, 30, 30]);
const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
const VAL: Rgb<u8> = Rgb([255, 127, 14]);

/// The chart as PNG bytes.
pub fn png(history: &[EpochRecord]) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    render(history)
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .context("cannot encode the metrics chart")?;
    Ok(bytes)
}

/// Draws the loss panel (left) and the accuracy panel (right).
pub fn render(history: &[EpochRecord]) -> RgbImage {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, BACKGROUND);
    let epochs: Vec<f64> = history.iter().map(|r| r.epoch as f64).collect();
    let series = |f: fn(&EpochRecord) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    panel(
        &mut img,
        0,
        "loss",
        &epochs,
        &series(|r| r.train_loss),
        &series(|r| r.val_loss),
    );
    panel(
        &mut img,
        PANEL,
        "accuracy %",
        &epochs,
        &series(|r| 100.0 * r.train_accuracy),
        &series(|r| 100.0 * r.val_accuracy),
    );
    img
}

/// One panel at horizontal offset `left`: title, legend, grid, ticks and both curves.
fn panel(img: &mut RgbImage, left: u32, title: &str, xs: &[f64], train: &[f64], val: &[f64]) {
    let x0 = f64::from(left) + MARGIN_LEFT;
    let x1 = f64::from(left + PANEL) - MARGIN_RIGHT;
    let (y0, y1) = (MARGIN_TOP, f64::from(HEIGHT) - MARGIN_BOTTOM);
    text(img, x0 as i64, 12, title, TEXT);
    let mut legend_x = x1 as i64 - text_width("train   val") - 40;
    for (name, color) in [("train", TRAIN), ("val", VAL)] {
        fill(img, legend_x, 18, 16, 4, color);
        text(img, legend_x + 22, 12, name, TEXT);
        legend_x += 22 + text_width(name) + 24;
    }

    let max_epoch = xs.last().copied().unwrap_or(1.0).max(2.0);
    let finite = train.iter().chain(val).copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let (ticks, step) = nice_ticks(lo, hi, 5);
    let (lo, hi) = (ticks[0], ticks[ticks.len() - 1]);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let px = |x: f64| x0 + (x - 1.0) / (max_epoch - 1.0) * (x1 - x0);
    let py = |y: f64| y1 - (y - lo) / (hi - lo) * (y1 - y0);

    for &t in &ticks {
        let y = py(t).round() as i64;
        hline(img, x0 as i64, x1 as i64, y, GRID);
        let label = format!("{t:.decimals$}");
        text(img, x0 as i64 - 8 - text_width(&label), y - 7, &label, TEXT);
    }
    let x_step = (max_epoch / 10.0).ceil().max(1.0) as usize;
    for epoch in (1..=max_epoch as usize).step_by(x_step) {
        let x = px(epoch as f64).round() as i64;
        vline(img, x, y0 as i64, y1 as i64, GRID);
        let label = epoch.to_string();
        text(img, x - text_width(&label) / 2, y1 as i64 + 8, &label, TEXT);
    }
    text(
        img,
        ((x0 + x1) / 2.0) as i64 - text_width("epoch") / 2,
        y1 as i64 + 28,
        "epoch",
        TEXT,
    );
    hline(img, x0 as i64, x1 as i64, y1 as i64, AXIS);
    vline(img, x0 as i64, y0 as i64, y1 as i64, AXIS);

    for (values, color) in [(train, TRAIN), (val, VAL)] {
        let points: Vec<(f64, f64)> = xs
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_finite())
            .map(|(&x, &v)| (px(x), py(v)))
            .collect();
        for pair in points.windows(2) {
            line(img, pair[0], pair[1], color);
        }
        for &(x, y) in &points {
            fill(img, x as i64 - 3, y as i64 - 3, 7, 7, color);
        }
    }
}

/// Round tick values (1, 2 or 5 times a power of ten apart) covering `lo..=hi` with about
/// `target` intervals, and their spacing.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let raw = (hi - lo) / target as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    ((first..=last).map(|i| i as f64 * step).collect(), step)
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
        img.put_pixel(x as u32, y as u32, color);
    }
}

fn fill(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, color: Rgb<u8>) {
    for dy in 0..h {
        for dx in 0..w {
            put(img, x + dx, y + dy, color);
        }
    }
}

fn hline(img: &mut RgbImage, x0: i64, x1: i64, y: i64, color: Rgb<u8>) {
    fill(img, x0, y, x1 - x0 + 1, 1, color);
}

fn vline(img: &mut RgbImage, x: i64, y0: i64, y1: i64, color: Rgb<u8>) {
    fill(img, x, y0, 1, y1 - y0 + 1, color);
}

/// A 2-pixel-wide straight line.
fn line(img: &mut RgbImage, (xa, ya): (f64, f64), (xb, yb): (f64, f64), color: Rgb<u8>) {
    let steps = (xb - xa).abs().max((yb - ya).abs()).ceil().max(1.0) as i64;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (xa + t * (xb - xa), ya + t * (yb - ya));
        fill(img, x.round() as i64 - 1, y.round() as i64 - 1, 2, 2, color);
    }
}

/// Width in pixels of `s` in the built-in font.
fn text_width(s: &str) -> i64 {
    (s.chars().count() as i64 * 6 - 1).max(0) * i64::from(SCALE)
}

/// Draws `s` with its top-left corner at `(x, y)`; characters without a glyph are blank.
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: Rgb<u8>) {
    let scale = i64::from(SCALE);
    for (i, c) in s.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        let left = x + i as i64 * 6 * scale;
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits & (0b10000 >> col) != 0 {
                    fill(
                        img,
                        left + col * scale,
                        y + row as i64 * scale,
                        scale,
                        scale,
                        color,
                    );
                }
            }
        }
    }
}

/// The 5x7 bitmap of `c` (one row per byte, the leftmost pixel in bit 4), for the characters the
/// chart writes.
fn glyph(c: char) -> Option<[u8; 7]> {
    Some(match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '-' => [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00],
        'a' => [0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f],
        'c' => [0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e],
        'e' => [0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e],
        'l' => [0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e],
        'p' => [0x00, 0x00, 0x1e, 0x11, 0x1e, 0x10, 0x10],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e],
        't' => [0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0f, 0x01, 0x0e],
        _ => return None,
    })
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
    fn ticks_are_round_and_cover_the_range() {
        let (ticks, step) = nice_ticks(0.23, 0.91, 5);
        assert!((step - 0.2).abs() < 1e-12);
        assert!(ticks[0] <= 0.23 && *ticks.last().unwrap() >= 0.91);
        let (ticks, step) = nice_ticks(12.0, 88.0, 5);
        assert_eq!((step, ticks.len()), (20.0, 6));
    }

    #[test]
    fn curves_use_both_colours_and_every_glyph_fits() {
        let img = render(&[
            record(1, 1.2, 0.6),
            record(2, 0.8, 0.7),
            record(3, 0.5, 0.8),
        ]);
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        let count = |color| img.pixels().filter(|p| **p == color).count();
        assert!(count(TRAIN) > 100 && count(VAL) > 100);
        for c in "0123456789.%-accuracy loss train val epoch".chars() {
            assert!(c == ' ' || glyph(c).is_some(), "no glyph for {c:?}");
        }
    }

    #[test]
    fn a_single_epoch_and_non_finite_values_still_draw() {
        let img = render(&[record(1, f64::NAN, 0.5)]);
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        assert!(png(&[record(1, 0.7, 0.5)]).is_ok_and(|b| b.starts_with(b"\x89PNG")));
    }
}
