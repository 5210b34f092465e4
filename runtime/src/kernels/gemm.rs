//! The one place the runtime multiplies matrices: two register-blocked micro-kernels that
//! accumulate an `MR x NR` output tile, fronted by bounds-checked safe functions.
//!
//! Every output element is one sequential chain of fused multiply-adds over the reduction index,
//! starting from the tile's previous value. The AVX2 kernels and the portable fallback therefore
//! give bit-identical results, and so does any blocking of the work around them: results depend on
//! the shapes only, never on the machine's SIMD width or on the number of threads.
//!
//! - [`rows_panel`] reads each tile row's left operand from an arbitrary offset in a buffer, as
//!   runs ([`Seg`]) of consecutive values: convolution reads the zero-padded input directly this
//!   way (one run per kernel row), so no im2col matrix is ever built.
//! - [`sum_outer`] sums outer products over a 2-D grid of positions (pixels): the weight gradient.
//!
//! The tile is 6 x 32: two 16-wide registers per row with AVX-512 (twelve accumulators), or two
//! passes of 6 x 16 with AVX2. Outputs of at most 16 columns (a 16-channel convolution) take the
//! narrow tile instead, 12 x 16 ([`rows_panel_narrow`], [`sum_outer_narrow`]): one register per
//! row with AVX-512, two passes of 6 x 16 with AVX2, so no multiply-add is spent on padding
//! columns. Which kernel runs is chosen once at run time ([`crate::simd`]).

use crate::simd::{Simd, simd};

/// Rows of an output tile.
pub(crate) const MR: usize = 6;
/// Columns of an output tile: the width of a packed right-hand panel.
pub(crate) const NR: usize = 32;

/// An output tile, accumulated in place.
pub(crate) type Tile = [[f32; NR]; MR];

/// Rows of a narrow output tile.
pub(crate) const NARROW_MR: usize = 2 * MR;
/// Columns a narrow tile computes: one AVX-512 register, two AVX2 ones.
pub(crate) const NARROW_NR: usize = 16;

/// A narrow output tile: `NARROW_MR` rows of which the first [`NARROW_NR`] columns are
/// computed (the others are left as they are). Its two halves are [`Tile`]s ([`halves`]), so it
/// is stored as two wide tiles are.
pub(crate) type NarrowTile = [[f32; NR]; NARROW_MR];

/// The two [`Tile`]s a narrow tile is made of: rows `0..MR` and `MR..2 * MR`.
pub(crate) fn halves(tile: &NarrowTile) -> [&Tile; 2] {
    let (top, bottom) = tile.split_at(MR);
    [top, bottom].map(|half| half.try_into().expect("MR rows"))
}

/// The mutable halves of a narrow tile (see [`halves`]).
fn halves_mut(tile: &mut NarrowTile) -> [&mut Tile; 2] {
    let (top, bottom) = tile.split_at_mut(MR);
    [top, bottom].map(|half| half.try_into().expect("MR rows"))
}

/// A run of `len` consecutive reduction steps whose left values start `offset` floats after a
/// row's base offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seg {
    /// Offset of the run from the row's base.
    pub offset: usize,
    /// Number of reduction steps in the run.
    pub len: usize,
}

/// What a kernel starts each tile element's chain from. The kernels load it into registers
/// themselves: a tile written with narrower stores just before (a bias broadcast, zeros) and
/// then loaded whole stalls on store forwarding, which cost a third of the first convolution's
/// time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start<'a> {
    /// Zeros.
    Zero,
    /// The same row in every tile row (a bias).
    Row(&'a [f32; NR]),
    /// The tile's current values.
    Tile,
}

impl Start<'_> {
    /// Sets the first `cols` columns of `tile`'s rows to the start, as the portable kernels
    /// begin.
    fn apply(self, tile: &mut [[f32; NR]], cols: usize) {
        for row in tile {
            match self {
                Start::Zero => row[..cols].fill(0.0),
                Start::Row(start) => row[..cols].copy_from_slice(&start[..cols]),
                Start::Tile => {}
            }
        }
    }
}

/// Runs with, computed once, how many steps precede each and how far past a row's offset any of
/// them reads: [`rows_panel`] checks its reads against these instead of recounting the runs on
/// every tile (a tenth of the first convolution's time).
#[derive(Clone, Debug)]
pub(crate) struct RunTable {
    segs: Vec<Seg>,
    /// `before[i]`: steps in `segs[..i]` (one more entry than `segs`).
    before: Vec<usize>,
    /// The largest `offset + len` of the runs.
    span: usize,
}

impl RunTable {
    pub(crate) fn new(segs: Vec<Seg>) -> Self {
        let before = std::iter::once(0)
            .chain(segs.iter().scan(0, |steps, s| {
                *steps += s.len;
                Some(*steps)
            }))
            .collect();
        let span = segs.iter().map(|s| s.offset + s.len).max().unwrap_or(0);
        RunTable { segs, before, span }
    }

    /// Runs `range` (by index), and the steps of the runs before them (where their panel rows
    /// start).
    pub(crate) fn view(&self, range: std::ops::Range<usize>) -> (Runs<'_>, usize) {
        let runs = Runs {
            segs: &self.segs[range.clone()],
            steps: self.before[range.end] - self.before[range.start],
            span: self.span,
        };
        (runs, self.before[range.start])
    }

    /// All the runs.
    pub(crate) fn all(&self) -> Runs<'_> {
        self.view(0..self.segs.len()).0
    }

    /// The number of runs.
    pub(crate) fn len(&self) -> usize {
        self.segs.len()
    }
}

/// Some runs of a [`RunTable`], with their steps and a bound on their reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Runs<'a> {
    segs: &'a [Seg],
    steps: usize,
    /// At least the largest `offset + len` of `segs` (the table's).
    span: usize,
}

/// Rounds `n` up to a whole number of panels.
pub(crate) fn panels(n: usize) -> usize {
    n.div_ceil(NR)
}

/// `tile[i][j] = start[i][j] + sum over runs s, steps p of
/// a[rows[i] + s.offset + p] * panel[(k + p) * NR + j]`, where `k` counts the steps of the runs
/// before `s`: the panel holds one `NR`-wide row per step.
///
/// Panics if a read would leave `a` or `panel`: callers size every buffer from validated layer
/// shapes, so a failure here is a bug in the runtime, not bad user input.
pub(crate) fn rows_panel(
    tile: &mut Tile,
    start: Start<'_>,
    a: &[f32],
    rows: &[usize; MR],
    runs: Runs<'_>,
    panel: &[f32],
) {
    check_rows_panel(a, rows, runs, panel);
    // SAFETY: checked just above; `simd` never picks more than the CPU has.
    unsafe { rows_panel_on(simd(), tile, start, a, rows, runs.segs, panel) }
}

/// [`rows_panel`] on the kernels of `path`.
///
/// # Safety
/// The CPU supports `path`, and [`check_rows_panel`] passed for the arguments.
unsafe fn rows_panel_on(
    path: Simd,
    tile: &mut Tile,
    start: Start<'_>,
    a: &[f32],
    rows: &[usize; MR],
    segs: &[Seg],
    panel: &[f32],
) {
    let (ap, pp) = (a.as_ptr(), panel.as_ptr());
    // SAFETY (both kernels): the check bounds every read (`a` up to `rows[i] + span`, `panel`
    // up to `steps * NR`), and the CPU supports the kernel's target features.
    match path {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { avx512::rows_panel(tile, start, ap, rows, segs, pp) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { avx2::rows_panel(tile, start, ap, rows, segs, pp, 2) },
        _ => portable_rows_panel(tile, NR, start, a, rows, segs, panel),
    }
}

/// [`rows_panel`] into a narrow tile: the first [`NARROW_NR`] columns of the panel (whose rows
/// are still `NR` floats apart), for `NARROW_MR` rows.
pub(crate) fn rows_panel_narrow(
    tile: &mut NarrowTile,
    start: Start<'_>,
    a: &[f32],
    rows: &[usize; NARROW_MR],
    runs: Runs<'_>,
    panel: &[f32],
) {
    check_rows_panel(a, rows, runs, panel);
    // SAFETY: checked just above; `simd` never picks more than the CPU has.
    unsafe { rows_panel_narrow_on(simd(), tile, start, a, rows, runs.segs, panel) }
}

/// [`rows_panel_narrow`] on the kernels of `path`.
///
/// # Safety
/// The CPU supports `path`, and [`check_rows_panel`] passed for the arguments.
unsafe fn rows_panel_narrow_on(
    path: Simd,
    tile: &mut NarrowTile,
    start: Start<'_>,
    a: &[f32],
    rows: &[usize; NARROW_MR],
    segs: &[Seg],
    panel: &[f32],
) {
    let (ap, pp) = (a.as_ptr(), panel.as_ptr());
    // SAFETY (both kernels): as in `rows_panel_on`; each AVX2 pass reads half of the rows.
    match path {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { avx512_narrow::rows_panel(tile, start, ap, rows, segs, pp) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => {
            for (half, rows) in halves_mut(tile).into_iter().zip(rows.chunks_exact(MR)) {
                let rows = rows.try_into().expect("MR rows");
                unsafe { avx2::rows_panel(half, start, ap, rows, segs, pp, 1) };
            }
        }
        _ => portable_rows_panel(tile, NARROW_NR, start, a, rows, segs, panel),
    }
}

/// Checks that [`rows_panel`]'s reads stay inside `a` and `panel`.
fn check_rows_panel(a: &[f32], rows: &[usize], runs: Runs<'_>, panel: &[f32]) {
    let last = rows.iter().copied().max().unwrap_or(0);
    assert!(
        panel.len() >= runs.steps * NR,
        "rows_panel: panel too short"
    );
    assert!(
        last + runs.span <= a.len(),
        "rows_panel: a row runs past its buffer"
    );
}

/// The definition of [`rows_panel`] over the first `cols` columns, one `mul_add` at a time.
fn portable_rows_panel<const R: usize>(
    tile: &mut [[f32; NR]; R],
    cols: usize,
    start: Start<'_>,
    a: &[f32],
    rows: &[usize; R],
    segs: &[Seg],
    panel: &[f32],
) {
    start.apply(tile, cols);
    let mut k = 0;
    for s in segs {
        for p in 0..s.len {
            let b = &panel[(k + p) * NR..(k + p) * NR + cols];
            for (row, &r) in tile.iter_mut().zip(rows) {
                let v = a[r + s.offset + p];
                for (c, &w) in row.iter_mut().zip(b) {
                    *c = v.mul_add(w, *c);
                }
            }
        }
        k += s.len;
    }
}

/// Positions of a batch of 2-D grids (`images` of `rows x cols` pixels) and how far apart they
/// lie in the two operands of [`sum_outer`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    /// Grids (images).
    pub images: usize,
    /// Rows of a grid.
    pub rows: usize,
    /// Columns of a grid.
    pub cols: usize,
    /// Distance in `a` between images.
    pub a_image: usize,
    /// Distance in `a` between grid rows.
    pub a_row: usize,
    /// Distance in `a` between grid columns.
    pub a_col: usize,
    /// Distance in `b` between images.
    pub b_image: usize,
    /// Distance in `b` between grid rows.
    pub b_row: usize,
    /// Distance in `b` between grid columns.
    pub b_col: usize,
}

impl Grid {
    /// Offset of position `(m, r, c)` from the first, in `a` and in `b`.
    fn at(&self, m: usize, r: usize, c: usize) -> (usize, usize) {
        (
            m * self.a_image + r * self.a_row + c * self.a_col,
            m * self.b_image + r * self.b_row + c * self.b_col,
        )
    }
}

/// `tile[i][j] = start[i][j] + sum over positions (m, r, c) in order (images, then rows, then
/// columns) of a[a_rows[i] + p_a] * b[b0 + p_b + j]`, where `(p_a, p_b)` is the position's
/// offset in each operand ([`Grid`]). `start` is [`Start::Zero`] or [`Start::Tile`].
///
/// Panics if a read would leave `a` or `b` (a runtime bug, as for [`rows_panel`]).
pub(crate) fn sum_outer(
    tile: &mut Tile,
    start: Start<'_>,
    a: &[f32],
    a_rows: &[usize; MR],
    b: &[f32],
    b0: usize,
    g: Grid,
) {
    if !check_sum_outer(a, a_rows, b, b0 + NR, g) {
        start.apply(tile, NR);
        return;
    }
    // SAFETY: checked just above; `simd` never picks more than the CPU has.
    unsafe { sum_outer_on(simd(), tile, start, a, a_rows, b, b0, g) }
}

/// [`sum_outer`] on the kernels of `path`.
///
/// # Safety
/// The CPU supports `path`, and [`check_sum_outer`] passed (and returned `true`) for the
/// arguments.
#[allow(clippy::too_many_arguments)]
unsafe fn sum_outer_on(
    path: Simd,
    tile: &mut Tile,
    start: Start<'_>,
    a: &[f32],
    a_rows: &[usize; MR],
    b: &[f32],
    b0: usize,
    g: Grid,
) {
    // SAFETY (both kernels): the check bounds the last (largest) offset read from each operand;
    // every other offset is smaller. The CPU supports the kernel's target features.
    match path {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe {
            avx512::sum_outer(tile, start, a.as_ptr(), a_rows, b.as_ptr().add(b0), g)
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe {
            avx2::sum_outer(tile, start, a.as_ptr(), a_rows, b.as_ptr().add(b0), g, 2)
        },
        _ => portable_sum_outer(tile, NR, start, a, a_rows, b, b0, g),
    }
}

/// [`sum_outer`] into a narrow tile: [`NARROW_NR`] columns of `b` for `NARROW_MR` rows of `a`.
pub(crate) fn sum_outer_narrow(
    tile: &mut NarrowTile,
    start: Start<'_>,
    a: &[f32],
    a_rows: &[usize; NARROW_MR],
    b: &[f32],
    b0: usize,
    g: Grid,
) {
    if !check_sum_outer(a, a_rows, b, b0 + NARROW_NR, g) {
        start.apply(tile, NARROW_NR);
        return;
    }
    // SAFETY: checked just above; `simd` never picks more than the CPU has.
    unsafe { sum_outer_narrow_on(simd(), tile, start, a, a_rows, b, b0, g) }
}

/// [`sum_outer_narrow`] on the kernels of `path`.
///
/// # Safety
/// As for [`sum_outer_on`].
#[allow(clippy::too_many_arguments)]
unsafe fn sum_outer_narrow_on(
    path: Simd,
    tile: &mut NarrowTile,
    start: Start<'_>,
    a: &[f32],
    a_rows: &[usize; NARROW_MR],
    b: &[f32],
    b0: usize,
    g: Grid,
) {
    // SAFETY (both kernels): as in `sum_outer_on`; each AVX2 pass reads half of the rows.
    match path {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe {
            avx512_narrow::sum_outer(tile, start, a.as_ptr(), a_rows, b.as_ptr().add(b0), g)
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => {
            for (half, rows) in halves_mut(tile).into_iter().zip(a_rows.chunks_exact(MR)) {
                let rows = rows.try_into().expect("MR rows");
                unsafe { avx2::sum_outer(half, start, a.as_ptr(), rows, b.as_ptr().add(b0), g, 1) };
            }
        }
        _ => portable_sum_outer(tile, NARROW_NR, start, a, a_rows, b, b0, g),
    }
}

/// Whether [`sum_outer`] has positions to sum, having checked that its reads stay inside `a`
/// and `b` (whose reads end before `b_end` past a position's offset).
fn check_sum_outer(a: &[f32], a_rows: &[usize], b: &[f32], b_end: usize, g: Grid) -> bool {
    if g.images == 0 || g.rows == 0 || g.cols == 0 {
        return false;
    }
    let (a_span, b_span) = g.at(g.images - 1, g.rows - 1, g.cols - 1);
    assert!(
        a_rows.iter().all(|&r| r + a_span < a.len()) && b_end + b_span <= b.len(),
        "sum_outer: grid runs past its buffers"
    );
    true
}

/// The definition of [`sum_outer`] over the first `cols` columns, one `mul_add` at a time.
#[allow(clippy::too_many_arguments)]
fn portable_sum_outer<const R: usize>(
    tile: &mut [[f32; NR]; R],
    cols: usize,
    start: Start<'_>,
    a: &[f32],
    a_rows: &[usize; R],
    b: &[f32],
    b0: usize,
    g: Grid,
) {
    start.apply(tile, cols);
    for m in 0..g.images {
        for r in 0..g.rows {
            for c in 0..g.cols {
                let (pa, pb) = g.at(m, r, c);
                let bv = &b[b0 + pb..b0 + pb + cols];
                for (row, &ar) in tile.iter_mut().zip(a_rows) {
                    let v = a[ar + pa];
                    for (t, &w) in row.iter_mut().zip(bv) {
                        *t = v.mul_add(w, *t);
                    }
                }
            }
        }
    }
}

/// Runs `iters` steps of the kernels' inner loop on registers only (the tile's twelve independent
/// multiply-add chains, nothing loaded) with the widest instructions the kernels use, and returns
/// the floating-point operations done (a multiply-add counts two) and a value that depends on
/// every step, so that none is optimised away. What [`crate::peak`] times.
pub(crate) fn fma_loop(iters: u64) -> (f64, f32) {
    let per_step = (2 * MR * NR) as f64;
    #[cfg(target_arch = "x86_64")]
    match simd() {
        // SAFETY: the CPU supports the kernel's target features (checked by `simd`).
        Simd::Avx512 => return (per_step * iters as f64, unsafe { avx512::fma_loop(iters) }),
        Simd::Avx2 => return (per_step * iters as f64, unsafe { avx2::fma_loop(iters) }),
        Simd::None => {}
    }
    let mut tile = [[1.0f32; NR]; MR];
    for _ in 0..iters {
        for row in &mut tile {
            for c in row.iter_mut() {
                *c = c.mul_add(0.999_999, 1e-7);
            }
        }
        std::hint::black_box(&mut tile);
    }
    (per_step * iters as f64, tile[0][0])
}

/// The instructions the kernels use (see [`crate::simd`]), for reports.
pub(crate) fn isa() -> &'static str {
    crate::simd::simd().label()
}

/// The kernels for x86-64 with AVX2 and FMA: each 16-column half of the tile in turn, in twelve
/// 8-wide registers named one by one (an array of registers is kept in memory by the compiler,
/// and every step then stores the tile).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use super::{Grid, MR, NR, Seg, Start, Tile};

    /// Runs `$body` (which calls `step!(b, a)`: `b` points at 16 panel floats, `a(i)` at row
    /// `i`'s value) with columns `$h * 16..` of the tile loaded into registers, then stores them
    /// back.
    macro_rules! with_tile {
        ($tile:expr, $start:expr, $h:expr, |$step:ident| $body:block) => {{
            let t: &mut Tile = $tile;
            let h: usize = $h * 16;
            let r = |i: usize| t[i].as_ptr().add(h);
            let start: Start<'_> = $start;
            macro_rules! init {
                ($i:expr) => {
                    match start {
                        Start::Zero => (_mm256_setzero_ps(), _mm256_setzero_ps()),
                        Start::Row(row) => {
                            let p = row.as_ptr().add(h);
                            (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                        }
                        Start::Tile => (_mm256_loadu_ps(r($i)), _mm256_loadu_ps(r($i).add(8))),
                    }
                };
            }
            let (mut c00, mut c01) = init!(0);
            let (mut c10, mut c11) = init!(1);
            let (mut c20, mut c21) = init!(2);
            let (mut c30, mut c31) = init!(3);
            let (mut c40, mut c41) = init!(4);
            let (mut c50, mut c51) = init!(5);
            macro_rules! $step {
                ($b:expr, $a:expr) => {{
                    let b: *const f32 = $b;
                    let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
                    let v = _mm256_broadcast_ss(&*$a(0));
                    c00 = _mm256_fmadd_ps(v, b0, c00);
                    c01 = _mm256_fmadd_ps(v, b1, c01);
                    let v = _mm256_broadcast_ss(&*$a(1));
                    c10 = _mm256_fmadd_ps(v, b0, c10);
                    c11 = _mm256_fmadd_ps(v, b1, c11);
                    let v = _mm256_broadcast_ss(&*$a(2));
                    c20 = _mm256_fmadd_ps(v, b0, c20);
                    c21 = _mm256_fmadd_ps(v, b1, c21);
                    let v = _mm256_broadcast_ss(&*$a(3));
                    c30 = _mm256_fmadd_ps(v, b0, c30);
                    c31 = _mm256_fmadd_ps(v, b1, c31);
                    let v = _mm256_broadcast_ss(&*$a(4));
                    c40 = _mm256_fmadd_ps(v, b0, c40);
                    c41 = _mm256_fmadd_ps(v, b1, c41);
                    let v = _mm256_broadcast_ss(&*$a(5));
                    c50 = _mm256_fmadd_ps(v, b0, c50);
                    c51 = _mm256_fmadd_ps(v, b1, c51);
                }};
            }
            $body
            let acc = [(c00, c01), (c10, c11), (c20, c21), (c30, c31), (c40, c41), (c50, c51)];
            for (row, (lo, hi)) in t.iter_mut().zip(acc) {
                _mm256_storeu_ps(row.as_mut_ptr().add(h), lo);
                _mm256_storeu_ps(row.as_mut_ptr().add(h + 8), hi);
            }
        }};
    }

    /// See [`super::rows_panel`], over the first `col_halves` 16-column halves of the tile (2:
    /// all of it; 1: a half of a narrow tile); `a` and `panel` must cover every offset it reads.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_panel(
        tile: &mut Tile,
        start: Start<'_>,
        a: *const f32,
        rows: &[usize; MR],
        segs: &[Seg],
        panel: *const f32,
        col_halves: usize,
    ) {
        // SAFETY: the caller checked every offset read below against the buffers' lengths; the
        // tile's rows hold `NR` floats each.
        unsafe {
            for h in 0..col_halves {
                with_tile!(tile, start, h, |step| {
                    let mut b = panel.add(h * 16);
                    for s in segs {
                        let base: [*const f32; MR] = [
                            a.add(rows[0] + s.offset),
                            a.add(rows[1] + s.offset),
                            a.add(rows[2] + s.offset),
                            a.add(rows[3] + s.offset),
                            a.add(rows[4] + s.offset),
                            a.add(rows[5] + s.offset),
                        ];
                        for p in 0..s.len {
                            step!(b, |i: usize| base[i].add(p));
                            b = b.add(NR);
                        }
                    }
                });
            }
        }
    }

    /// See [`super::fma_loop`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_loop(iters: u64) -> f32 {
        let mut tile = [[1.0f32; NR]; MR];
        let (scale, shift) = ([0.999_999f32; NR], [1e-7f32; MR]);
        // SAFETY: `scale` holds `NR` floats and `shift` `MR`, all the macro reads; the CPU
        // supports the target features.
        unsafe {
            for h in 0..2 {
                with_tile!(&mut tile, Start::Tile, h, |step| {
                    for _ in 0..iters {
                        step!(scale.as_ptr(), |i: usize| shift.as_ptr().add(i));
                    }
                });
            }
        }
        tile.iter().flatten().sum()
    }

    /// See [`super::sum_outer`], over the first `col_halves` 16-column halves of the tile (as
    /// in [`rows_panel`]); `b` points at the first position, and `a` and `b` must cover every
    /// offset it reads.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_outer(
        tile: &mut Tile,
        start: Start<'_>,
        a: *const f32,
        a_rows: &[usize; MR],
        b: *const f32,
        g: Grid,
        col_halves: usize,
    ) {
        // SAFETY: the caller checked the largest offset read from each operand; the tile's rows
        // hold `NR` floats each.
        unsafe {
            for h in 0..col_halves {
                with_tile!(tile, start, h, |step| {
                    for m in 0..g.images {
                        for r in 0..g.rows {
                            let (pa, pb) = g.at(m, r, 0);
                            let base: [*const f32; MR] =
                                std::array::from_fn(|i| a.add(a_rows[i] + pa));
                            let br = b.add(pb + h * 16);
                            for c in 0..g.cols {
                                let ac = c * g.a_col;
                                step!(br.add(c * g.b_col), |i: usize| base[i].add(ac));
                            }
                        }
                    }
                });
            }
        }
    }
}

/// The kernels for x86-64 with AVX-512: the whole 6 x 32 tile in twelve 16-wide registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::{Grid, MR, NR, Seg, Start, Tile};

    /// As the AVX2 module's, with 16-wide registers covering the whole tile at once.
    macro_rules! with_tile {
        ($tile:expr, $start:expr, |$step:ident| $body:block) => {{
            let t: &mut Tile = $tile;
            let r = |i: usize| t[i].as_ptr();
            let start: Start<'_> = $start;
            macro_rules! init {
                ($i:expr) => {
                    match start {
                        Start::Zero => (_mm512_setzero_ps(), _mm512_setzero_ps()),
                        Start::Row(row) => {
                            let p = row.as_ptr();
                            (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
                        }
                        Start::Tile => (_mm512_loadu_ps(r($i)), _mm512_loadu_ps(r($i).add(16))),
                    }
                };
            }
            let (mut c00, mut c01) = init!(0);
            let (mut c10, mut c11) = init!(1);
            let (mut c20, mut c21) = init!(2);
            let (mut c30, mut c31) = init!(3);
            let (mut c40, mut c41) = init!(4);
            let (mut c50, mut c51) = init!(5);
            macro_rules! $step {
                ($b:expr, $a:expr) => {{
                    let b: *const f32 = $b;
                    let (b0, b1) = (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)));
                    let v = _mm512_set1_ps(*$a(0));
                    c00 = _mm512_fmadd_ps(v, b0, c00);
                    c01 = _mm512_fmadd_ps(v, b1, c01);
                    let v = _mm512_set1_ps(*$a(1));
                    c10 = _mm512_fmadd_ps(v, b0, c10);
                    c11 = _mm512_fmadd_ps(v, b1, c11);
                    let v = _mm512_set1_ps(*$a(2));
                    c20 = _mm512_fmadd_ps(v, b0, c20);
                    c21 = _mm512_fmadd_ps(v, b1, c21);
                    let v = _mm512_set1_ps(*$a(3));
                    c30 = _mm512_fmadd_ps(v, b0, c30);
                    c31 = _mm512_fmadd_ps(v, b1, c31);
                    let v = _mm512_set1_ps(*$a(4));
                    c40 = _mm512_fmadd_ps(v, b0, c40);
                    c41 = _mm512_fmadd_ps(v, b1, c41);
                    let v = _mm512_set1_ps(*$a(5));
                    c50 = _mm512_fmadd_ps(v, b0, c50);
                    c51 = _mm512_fmadd_ps(v, b1, c51);
                }};
            }
            $body
            let acc = [(c00, c01), (c10, c11), (c20, c21), (c30, c31), (c40, c41), (c50, c51)];
            for (row, (lo, hi)) in t.iter_mut().zip(acc) {
                _mm512_storeu_ps(row.as_mut_ptr(), lo);
                _mm512_storeu_ps(row.as_mut_ptr().add(16), hi);
            }
        }};
    }

    /// See [`super::rows_panel`]; `a` and `panel` must cover every offset it reads.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_panel(
        tile: &mut Tile,
        start: Start<'_>,
        a: *const f32,
        rows: &[usize; MR],
        segs: &[Seg],
        panel: *const f32,
    ) {
        // SAFETY: the caller checked every offset read below against the buffers' lengths; the
        // tile's rows hold `NR` floats each.
        unsafe {
            with_tile!(tile, start, |step| {
                let mut b = panel;
                for s in segs {
                    let base: [*const f32; MR] = [
                        a.add(rows[0] + s.offset),
                        a.add(rows[1] + s.offset),
                        a.add(rows[2] + s.offset),
                        a.add(rows[3] + s.offset),
                        a.add(rows[4] + s.offset),
                        a.add(rows[5] + s.offset),
                    ];
                    for p in 0..s.len {
                        step!(b, |i: usize| base[i].add(p));
                        b = b.add(NR);
                    }
                }
            });
        }
    }

    /// See [`super::fma_loop`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_loop(iters: u64) -> f32 {
        let mut tile = [[1.0f32; NR]; MR];
        let (scale, shift) = ([0.999_999f32; NR], [1e-7f32; MR]);
        // SAFETY: `scale` holds `NR` floats and `shift` `MR`, all the macro reads; the CPU
        // supports the target features.
        unsafe {
            with_tile!(&mut tile, Start::Tile, |step| {
                for _ in 0..iters {
                    step!(scale.as_ptr(), |i: usize| shift.as_ptr().add(i));
                }
            });
        }
        tile.iter().flatten().sum()
    }

    /// See [`super::sum_outer`]; `b` points at the first position, and `a` and `b` must cover
    /// every offset it reads.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_outer(
        tile: &mut Tile,
        start: Start<'_>,
        a: *const f32,
        a_rows: &[usize; MR],
        b: *const f32,
        g: Grid,
    ) {
        // SAFETY: the caller checked the largest offset read from each operand; the tile's rows
        // hold `NR` floats each.
        unsafe {
            with_tile!(tile, start, |step| {
                for m in 0..g.images {
                    for r in 0..g.rows {
                        let (pa, pb) = g.at(m, r, 0);
                        let base: [*const f32; MR] = std::array::from_fn(|i| a.add(a_rows[i] + pa));
                        let br = b.add(pb);
                        for c in 0..g.cols {
                            let ac = c * g.a_col;
                            step!(br.add(c * g.b_col), |i: usize| base[i].add(ac));
                        }
                    }
                }
            });
        }
    }
}

/// The narrow kernels for x86-64 with AVX-512: a 12 x 16 tile in twelve 16-wide registers, one
/// per row.
#[cfg(target_arch = "x86_64")]
mod avx512_narrow {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps};

    use super::{Grid, NARROW_MR, NR, NarrowTile, Seg, Start};

    /// As the wide kernels' `with_tile`, for the narrow tile's first 16 columns.
    macro_rules! with_narrow {
        ($tile:expr, $start:expr, |$step:ident| $body:block) => {{
            let t: &mut NarrowTile = $tile;
            let start: Start<'_> = $start;
            macro_rules! init {
                ($i:expr) => {
                    match start {
                        Start::Zero => _mm512_setzero_ps(),
                        Start::Row(row) => _mm512_loadu_ps(row.as_ptr()),
                        Start::Tile => _mm512_loadu_ps(t[$i].as_ptr()),
                    }
                };
            }
            let (mut c0, mut c1, mut c2, mut c3) = (init!(0), init!(1), init!(2), init!(3));
            let (mut c4, mut c5, mut c6, mut c7) = (init!(4), init!(5), init!(6), init!(7));
            let (mut c8, mut c9, mut c10, mut c11) = (init!(8), init!(9), init!(10), init!(11));
            macro_rules! $step {
                ($b:expr, $a:expr) => {{
                    let b = _mm512_loadu_ps($b);
                    c0 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(0)), b, c0);
                    c1 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(1)), b, c1);
                    c2 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(2)), b, c2);
                    c3 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(3)), b, c3);
                    c4 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(4)), b, c4);
                    c5 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(5)), b, c5);
                    c6 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(6)), b, c6);
                    c7 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(7)), b, c7);
                    c8 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(8)), b, c8);
                    c9 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(9)), b, c9);
                    c10 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(10)), b, c10);
                    c11 = _mm512_fmadd_ps(_mm512_set1_ps(*$a(11)), b, c11);
                }};
            }
            $body
            let acc = [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11];
            for (row, c) in t.iter_mut().zip(acc) {
                std::arch::x86_64::_mm512_storeu_ps(row.as_mut_ptr(), c);
            }
        }};
    }

    /// See [`super::rows_panel_narrow`]; `a` and `panel` must cover every offset it reads.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_panel(
        tile: &mut NarrowTile,
        start: Start<'_>,
        a: *const f32,
        rows: &[usize; NARROW_MR],
        segs: &[Seg],
        panel: *const f32,
    ) {
        // SAFETY: the caller checked every offset read below against the buffers' lengths; the
        // tile's rows hold `NR` floats each.
        unsafe {
            with_narrow!(tile, start, |step| {
                let mut b = panel;
                for s in segs {
                    let base: [*const f32; NARROW_MR] =
                        std::array::from_fn(|i| a.add(rows[i] + s.offset));
                    for p in 0..s.len {
                        step!(b, |i: usize| base[i].add(p));
                        b = b.add(NR);
                    }
                }
            });
        }
    }

    /// See [`super::sum_outer_narrow`]; `b` points at the first position, and `a` and `b` must
    /// cover every offset it reads.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_outer(
        tile: &mut NarrowTile,
        start: Start<'_>,
        a: *const f32,
        a_rows: &[usize; NARROW_MR],
        b: *const f32,
        g: Grid,
    ) {
        // SAFETY: the caller checked the largest offset read from each operand; the tile's rows
        // hold `NR` floats each.
        unsafe {
            with_narrow!(tile, start, |step| {
                for m in 0..g.images {
                    for r in 0..g.rows {
                        let (pa, pb) = g.at(m, r, 0);
                        let base: [*const f32; NARROW_MR] =
                            std::array::from_fn(|i| a.add(a_rows[i] + pa));
                        let br = b.add(pb);
                        for c in 0..g.cols {
                            let ac = c * g.a_col;
                            step!(br.add(c * g.b_col), |i: usize| base[i].add(ac));
                        }
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect()
    }

    /// The kernels' definition, written out with one `mul_add` chain per element.
    fn chain(terms: impl Iterator<Item = (f32, f32)>, start: f32) -> f32 {
        terms.fold(start, |acc, (x, y)| x.mul_add(y, acc))
    }

    #[test]
    fn rows_panel_is_one_fma_chain_per_element() {
        let a = values(500, 1);
        let panel = values(23 * NR, 2);
        let rows = [0, 17, 100, 101, 250, 3];
        let segs = [
            Seg { offset: 5, len: 9 },
            Seg {
                offset: 40,
                len: 14,
            },
        ];
        let start = values(MR * NR, 3);
        let mut tile: Tile = std::array::from_fn(|i| std::array::from_fn(|j| start[i * NR + j]));
        rows_panel(
            &mut tile,
            Start::Tile,
            &a,
            &rows,
            RunTable::new(segs.to_vec()).all(),
            &panel,
        );
        for (i, &r) in rows.iter().enumerate() {
            for j in 0..NR {
                let steps = segs
                    .iter()
                    .flat_map(|s| (0..s.len).map(move |p| r + s.offset + p))
                    .enumerate()
                    .map(|(k, at)| (a[at], panel[k * NR + j]));
                // Bit-identical, not merely close: the kernels promise the exact chain.
                assert_eq!(tile[i][j], chain(steps, start[i * NR + j]), "({i}, {j})");
            }
        }
        // The other starts ignore what the tile held (NaN here).
        let row: [f32; NR] = std::array::from_fn(|j| j as f32 * 0.25 - 2.0);
        for (start, init) in [
            (Start::Zero, [[0.0; NR]; MR]),
            (Start::Row(&row), [row; MR]),
        ] {
            let mut tile = [[f32::NAN; NR]; MR];
            rows_panel(
                &mut tile,
                start,
                &a,
                &rows,
                RunTable::new(segs.to_vec()).all(),
                &panel,
            );
            let mut want = init;
            rows_panel(
                &mut want,
                Start::Tile,
                &a,
                &rows,
                RunTable::new(segs.to_vec()).all(),
                &panel,
            );
            assert_eq!(tile, want, "{start:?}");
        }
    }

    #[test]
    fn sum_outer_is_one_fma_chain_per_element() {
        let a = values(2000, 4);
        let b = values(2400, 5);
        let g = Grid {
            images: 2,
            rows: 3,
            cols: 5,
            a_image: 700,
            a_row: 120,
            a_col: 7,
            b_image: 1000,
            b_row: 200,
            b_col: 31,
        };
        let a_rows = [11, 12, 40, 3, 90, 91];
        let mut tile = [[0.5; NR]; MR];
        sum_outer(&mut tile, Start::Tile, &a, &a_rows, &b, 2, g);
        for (i, &ar) in a_rows.iter().enumerate() {
            for j in 0..NR {
                let steps = (0..g.images)
                    .flat_map(|m| (0..g.rows).map(move |r| (m, r)))
                    .flat_map(|(m, r)| (0..g.cols).map(move |c| (m, r, c)))
                    .map(|(m, r, c)| {
                        let (pa, pb) = g.at(m, r, c);
                        (a[ar + pa], b[2 + pb + j])
                    });
                assert_eq!(tile[i][j], chain(steps, 0.5), "({i}, {j})");
            }
        }
        let mut zeroed = [[f32::NAN; NR]; MR];
        sum_outer(&mut zeroed, Start::Zero, &a, &a_rows, &b, 2, g);
        let mut want = [[0.0; NR]; MR];
        sum_outer(&mut want, Start::Tile, &a, &a_rows, &b, 2, g);
        assert_eq!(zeroed, want);
    }

    /// The paths this CPU can run, widest first.
    fn paths() -> Vec<Simd> {
        [Simd::Avx512, Simd::Avx2, Simd::None]
            .into_iter()
            .filter(|&path| path >= crate::simd::cpu())
            .collect()
    }

    /// Every path this CPU runs, wide and narrow tiles, every start: each computed element is
    /// the definition's chain bit for bit, and a narrow tile's other columns stay as they were.
    #[test]
    fn every_path_is_one_fma_chain_per_element() {
        let a = values(900, 6);
        let panel = values(40 * NR, 7);
        let rows = [3, 50, 51, 400, 2, 600, 601, 602, 10, 11, 12, 13];
        let segs = [
            Seg { offset: 1, len: 12 },
            Seg {
                offset: 200,
                len: 18,
            },
        ];
        let table = RunTable::new(segs.to_vec());
        let row: [f32; NR] = std::array::from_fn(|j| j as f32 * 0.25 - 3.5);
        let init = values(NARROW_MR * NR, 8);
        let init: NarrowTile = std::array::from_fn(|i| std::array::from_fn(|j| init[i * NR + j]));
        let g = Grid {
            images: 2,
            rows: 3,
            cols: 4,
            a_image: 300,
            a_row: 70,
            a_col: 9,
            b_image: 330,
            b_row: 110,
            b_col: 33,
        };
        let a_rows = [5, 6, 7, 20, 21, 0, 1, 2, 100, 101, 102, 103];
        let b0 = 3;
        // The definitions, one `mul_add` chain per element.
        let (a, panel) = (&a, &panel);
        let rows_chain = |r: usize, j: usize, first: f32| {
            let steps = segs
                .iter()
                .flat_map(|s| (0..s.len).map(move |p| r + s.offset + p));
            chain(
                steps.enumerate().map(|(k, at)| (a[at], panel[k * NR + j])),
                first,
            )
        };
        let grid_chain = |ar: usize, j: usize, first: f32| {
            let mut acc = first;
            for m in 0..g.images {
                for r in 0..g.rows {
                    for c in 0..g.cols {
                        let (pa, pb) = g.at(m, r, c);
                        acc = a[ar + pa].mul_add(panel[b0 + pb + j], acc);
                    }
                }
            }
            acc
        };
        for path in paths() {
            for start in [Start::Zero, Start::Row(&row), Start::Tile] {
                let first = |i: usize, j: usize| match start {
                    Start::Zero => 0.0,
                    Start::Row(row) => row[j],
                    Start::Tile => init[i][j],
                };
                let check = |tile: &[[f32; NR]], cols: usize, what: &str, sum: bool| {
                    for (i, got) in tile.iter().enumerate() {
                        for (j, &got) in got.iter().enumerate() {
                            let want = if j >= cols {
                                init[i][j]
                            } else if sum {
                                grid_chain(a_rows[i], j, first(i, j))
                            } else {
                                rows_chain(rows[i], j, first(i, j))
                            };
                            // Bit-identical, not merely close: the kernels promise the exact chain.
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{path:?} {what} {start:?} ({i}, {j})"
                            );
                        }
                    }
                };
                check_rows_panel(a, &rows, table.all(), panel);
                let mut wide: Tile = std::array::from_fn(|i| init[i]);
                let wide_rows = rows[..MR].try_into().expect("MR rows");
                // SAFETY: `paths` holds what the CPU runs; the reads were checked above.
                unsafe { rows_panel_on(path, &mut wide, start, a, wide_rows, &segs, panel) };
                check(&wide, NR, "rows_panel", false);
                let mut narrow = init;
                // SAFETY: as above.
                unsafe { rows_panel_narrow_on(path, &mut narrow, start, a, &rows, &segs, panel) };
                check(&narrow, NARROW_NR, "rows_panel_narrow", false);
                if matches!(start, Start::Row(_)) {
                    continue;
                }
                assert!(check_sum_outer(a, &a_rows, panel, b0 + NR, g));
                let mut wide: Tile = std::array::from_fn(|i| init[i]);
                let wide_rows = a_rows[..MR].try_into().expect("MR rows");
                // SAFETY: as above.
                unsafe { sum_outer_on(path, &mut wide, start, a, wide_rows, panel, b0, g) };
                check(&wide, NR, "sum_outer", true);
                let mut narrow = init;
                // SAFETY: as above.
                unsafe { sum_outer_narrow_on(path, &mut narrow, start, a, &a_rows, panel, b0, g) };
                check(&narrow, NARROW_NR, "sum_outer_narrow", true);
            }
        }
    }

    #[test]
    #[should_panic(expected = "past its buffer")]
    fn rejects_rows_past_the_buffer() {
        let mut tile = [[0.0; NR]; MR];
        let a = vec![0.0; 10];
        let panel = vec![0.0; 4 * NR];
        rows_panel(
            &mut tile,
            Start::Zero,
            &a,
            &[0, 0, 0, 0, 0, 7],
            RunTable::new(vec![Seg { offset: 0, len: 4 }]).all(),
            &panel,
        );
    }
}
