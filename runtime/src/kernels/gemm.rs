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
//!   [`sum_outer_half`] computes half its columns, so that AVX2's two passes over the positions
//!   (one per register block) can each read their own copy of `b`.
//!
//! The tile is 6 x 32. Outputs of at most 16 columns (a 16-channel convolution) take the narrow
//! tile instead, 12 x 16 ([`rows_panel_narrow`], [`sum_outer_narrow`]), so no multiply-add is
//! spent on padding columns. One micro-kernel, generic over the register type and the register
//! block, serves both tiles on both instruction families (`x86`): AVX-512 computes a tile as
//! one block (6 x 2 or 12 x 1 registers), AVX2 as two blocks of 6 x 2. Which family runs is
//! chosen once at run time ([`crate::simd`]).

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

/// Rows of a short narrow tile ([`sum_outer_short`]).
pub(crate) const SHORT_MR: usize = 4;

/// A short narrow tile: `SHORT_MR` rows of which the first [`NARROW_NR`] columns are computed.
pub(crate) type ShortTile = [[f32; NR]; SHORT_MR];

/// The two [`Tile`]s a narrow tile is made of: rows `0..MR` and `MR..2 * MR`.
pub(crate) fn halves(tile: &NarrowTile) -> [&Tile; 2] {
    let (top, bottom) = tile.split_at(MR);
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
    rows_panel_cols::<MR, NR>(tile, start, a, rows, runs, panel);
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
    rows_panel_cols::<NARROW_MR, NARROW_NR>(tile, start, a, rows, runs, panel);
}

/// [`rows_panel`] for a tile of `R` rows of which the first `COLS` columns are computed (the
/// others are left as they are).
fn rows_panel_cols<const R: usize, const COLS: usize>(
    tile: &mut [[f32; NR]; R],
    start: Start<'_>,
    a: &[f32],
    rows: &[usize; R],
    runs: Runs<'_>,
    panel: &[f32],
) {
    check_rows_panel(a, rows, runs, panel);
    // SAFETY: checked just above; `simd` never picks more than the CPU has.
    unsafe { rows_panel_on::<R, COLS>(simd(), tile, start, a, rows, runs.segs, panel) }
}

/// [`rows_panel_cols`] on the kernels of `path`.
///
/// # Safety
/// The CPU supports `path`, and [`check_rows_panel`] passed for the arguments.
unsafe fn rows_panel_on<const R: usize, const COLS: usize>(
    path: Simd,
    tile: &mut [[f32; NR]; R],
    start: Start<'_>,
    a: &[f32],
    rows: &[usize; R],
    segs: &[Seg],
    panel: &[f32],
) {
    let (ap, pp) = (a.as_ptr(), panel.as_ptr());
    // SAFETY (both kernels): the check bounds every read (`a` up to `rows[i] + span`, `panel`
    // up to `steps * NR`), and the CPU supports the kernel's target features.
    match path {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe {
            x86::rows_panel_avx512::<R, COLS>(tile, start, ap, rows, segs, pp)
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::rows_panel_avx2::<R, COLS>(tile, start, ap, rows, segs, pp) },
        _ => portable_rows_panel(tile, COLS, start, a, rows, segs, panel),
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

/// What [`rows_panel_into`] and [`rows_panel_narrow_into`] apply to each computed value `v`
/// of column `c` as they store it, in this order (an inference epilogue's, or a ReLU's):
/// `v * scale[c] + shift[c]` (a multiply, then an add), then `+ residual[r * stride + c]`, then
/// `min(max(v, lo), hi)` with NaN passing (`v < lo` gives `lo`, then `v > hi` gives `hi`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Epilogue<'a> {
    /// Per-column `(scale, shift)`, from the tile's first column on.
    pub affine: Option<(&'a [f32], &'a [f32])>,
    /// Values added, laid out as the output rows (`stride` apart) from the tile's first value.
    pub residual: Option<&'a [f32]>,
    /// `(lo, hi)`.
    pub clamp: Option<(f32, f32)>,
}

impl Epilogue<'_> {
    /// The epilogue applied to `v` of column `c` in row `r`, as the kernels apply it.
    fn apply(&self, v: f32, r: usize, c: usize, stride: usize) -> f32 {
        let mut v = v;
        if let Some((scale, shift)) = self.affine {
            v = v * scale[c] + shift[c];
        }
        if let Some(residual) = self.residual {
            v += residual[r * stride + c];
        }
        if let Some((lo, hi)) = self.clamp {
            v = if v < lo { lo } else { v };
            v = if v > hi { hi } else { v };
        }
        v
    }
}

/// [`rows_panel`] from the start row `bias`, its `MR x NR` tile stored straight into `out`
/// (row `i` at `out[i * stride..][..NR]`) through `epilogue`, instead of into a tile the
/// caller copies out: a whole tile's round trip through the stack fewer.
///
/// Panics if a read or write would leave its buffer (a runtime bug, as for [`rows_panel`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_panel_into(
    out: &mut [f32],
    stride: usize,
    epilogue: &Epilogue<'_>,
    bias: &[f32; NR],
    a: &[f32],
    rows: &[usize; MR],
    runs: Runs<'_>,
    panel: &[f32],
) {
    rows_panel_cols_into::<MR, NR>(out, stride, epilogue, bias, a, rows, runs, panel);
}

/// [`rows_panel_into`] for a narrow tile: `NARROW_MR` rows of [`NARROW_NR`] columns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_panel_narrow_into(
    out: &mut [f32],
    stride: usize,
    epilogue: &Epilogue<'_>,
    bias: &[f32; NR],
    a: &[f32],
    rows: &[usize; NARROW_MR],
    runs: Runs<'_>,
    panel: &[f32],
) {
    rows_panel_cols_into::<NARROW_MR, NARROW_NR>(out, stride, epilogue, bias, a, rows, runs, panel);
}

/// [`rows_panel_into`] for `R` rows of `COLS` columns.
#[allow(clippy::too_many_arguments)]
fn rows_panel_cols_into<const R: usize, const COLS: usize>(
    out: &mut [f32],
    stride: usize,
    epilogue: &Epilogue<'_>,
    bias: &[f32; NR],
    a: &[f32],
    rows: &[usize; R],
    runs: Runs<'_>,
    panel: &[f32],
) {
    check_rows_panel(a, rows, runs, panel);
    check_into::<R, COLS>(out.len(), stride, epilogue);
    // SAFETY: checked just above; `simd` never picks more than the CPU has.
    unsafe {
        rows_panel_into_on::<R, COLS>(simd(), out, stride, epilogue, bias, a, rows, runs, panel)
    }
}

/// Checks that [`rows_panel_into`]'s stores stay inside `out` (of `len` values) and its
/// epilogue's reads inside their buffers.
fn check_into<const R: usize, const COLS: usize>(len: usize, stride: usize, epilogue: &Epilogue) {
    let extent = (R - 1) * stride + COLS;
    assert!(
        stride >= COLS && len >= extent,
        "rows_panel_into: the tile runs past its output"
    );
    if let Some((scale, shift)) = epilogue.affine {
        assert!(
            scale.len() >= COLS && shift.len() >= COLS,
            "rows_panel_into: too few factors"
        );
    }
    if let Some(residual) = epilogue.residual {
        assert!(
            residual.len() >= extent,
            "rows_panel_into: the residual is too short"
        );
    }
}

/// [`rows_panel_cols_into`] on the kernels of `path`.
///
/// # Safety
/// The CPU supports `path`; [`check_rows_panel`] and [`check_into`] passed for the arguments.
#[allow(clippy::too_many_arguments)]
unsafe fn rows_panel_into_on<const R: usize, const COLS: usize>(
    path: Simd,
    out: &mut [f32],
    stride: usize,
    epilogue: &Epilogue<'_>,
    bias: &[f32; NR],
    a: &[f32],
    rows: &[usize; R],
    runs: Runs<'_>,
    panel: &[f32],
) {
    let (ap, pp, op) = (a.as_ptr(), panel.as_ptr(), out.as_mut_ptr());
    // SAFETY (both kernels): the checks bound every read and write, and the CPU supports the
    // kernel's target features.
    match path {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe {
            x86::rows_panel_into_avx512::<R, COLS>(
                op, stride, epilogue, bias, ap, rows, runs.segs, pp,
            )
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe {
            x86::rows_panel_into_avx2::<R, COLS>(
                op, stride, epilogue, bias, ap, rows, runs.segs, pp,
            )
        },
        _ => {
            let mut tile = [[0.0; NR]; R];
            portable_rows_panel(&mut tile, COLS, Start::Row(bias), a, rows, runs.segs, panel);
            for (r, row) in tile.iter().enumerate() {
                for (c, &v) in row[..COLS].iter().enumerate() {
                    out[r * stride + c] = epilogue.apply(v, r, c, stride);
                }
            }
        }
    }
}

/// [`rows_panel`] from zeros, tile row `i` stored straight into `out[at[i]..][..NR]` (with
/// `add`, added into what it holds: `out + v`), instead of into a tile the caller copies out:
/// the input gradient's whole tiles, whose pixels need not be evenly spaced in `dx` (a strided
/// layer's phase wraps from one of its rows to the next).
///
/// Panics if a read or write would leave its buffer (a runtime bug, as for [`rows_panel`]).
pub(crate) fn rows_panel_to(
    out: &mut [f32],
    at: &[usize; MR],
    add: bool,
    a: &[f32],
    rows: &[usize; MR],
    runs: Runs<'_>,
    panel: &[f32],
) {
    rows_panel_cols_to::<MR, NR>(out, at, add, a, rows, runs, panel);
}

/// [`rows_panel_to`] for a narrow tile: `NARROW_MR` rows of [`NARROW_NR`] columns.
pub(crate) fn rows_panel_narrow_to(
    out: &mut [f32],
    at: &[usize; NARROW_MR],
    add: bool,
    a: &[f32],
    rows: &[usize; NARROW_MR],
    runs: Runs<'_>,
    panel: &[f32],
) {
    rows_panel_cols_to::<NARROW_MR, NARROW_NR>(out, at, add, a, rows, runs, panel);
}

/// [`rows_panel_to`] for `R` rows of `COLS` columns.
fn rows_panel_cols_to<const R: usize, const COLS: usize>(
    out: &mut [f32],
    at: &[usize; R],
    add: bool,
    a: &[f32],
    rows: &[usize; R],
    runs: Runs<'_>,
    panel: &[f32],
) {
    check_rows_panel(a, rows, runs, panel);
    check_to::<COLS>(out.len(), at);
    // SAFETY: checked just above; `simd` never picks more than the CPU has.
    unsafe { rows_panel_to_on::<R, COLS>(simd(), out, at, add, a, rows, runs, panel) }
}

/// Checks that [`rows_panel_to`]'s rows, `COLS` values from each of `at`, follow one another
/// in `out` (of `len` values) without overlapping: a row written over another would leave its
/// values to the order of the stores.
fn check_to<const COLS: usize>(len: usize, at: &[usize]) {
    assert!(
        at.windows(2).all(|w| w[0] + COLS <= w[1]),
        "rows_panel_to: rows out of order or overlapping"
    );
    assert!(
        at.last().is_none_or(|&r| r + COLS <= len),
        "rows_panel_to: a row runs past its output"
    );
}

/// [`rows_panel_cols_to`] on the kernels of `path`.
///
/// # Safety
/// The CPU supports `path`; [`check_rows_panel`] and [`check_to`] passed for the arguments.
#[allow(clippy::too_many_arguments)]
unsafe fn rows_panel_to_on<const R: usize, const COLS: usize>(
    path: Simd,
    out: &mut [f32],
    at: &[usize; R],
    add: bool,
    a: &[f32],
    rows: &[usize; R],
    runs: Runs<'_>,
    panel: &[f32],
) {
    let (ap, pp, op) = (a.as_ptr(), panel.as_ptr(), out.as_mut_ptr());
    // SAFETY (both kernels): the checks bound every read and write, and the CPU supports the
    // kernel's target features.
    match path {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe {
            x86::rows_panel_to_avx512::<R, COLS>(op, at, add, ap, rows, runs.segs, pp)
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe {
            x86::rows_panel_to_avx2::<R, COLS>(op, at, add, ap, rows, runs.segs, pp)
        },
        _ => {
            let mut tile = [[0.0; NR]; R];
            portable_rows_panel(&mut tile, COLS, Start::Zero, a, rows, runs.segs, panel);
            for (row, &r) in tile.iter().zip(at) {
                for (o, &v) in out[r..r + COLS].iter_mut().zip(row) {
                    *o = if add { *o + v } else { v };
                }
            }
        }
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

/// Values of the square panel [`rows_by_square`] multiplies by: [`NARROW_NR`] rows of
/// [`NARROW_NR`].
pub(crate) const SQUARE: usize = NARROW_NR * NARROW_NR;

/// `out[i * STEP + l] = sum over k < NARROW_NR of a[i * STEP + k] * u[k * NARROW_NR + l]` for
/// rows `i < rows` and columns `l < NARROW_NR`: each value one chain of multiply-adds from
/// zero over `k` in order, on every instruction family. The panel `u` is read into registers
/// once for all the rows, which go in groups whose sums stay in registers (eight rows with
/// AVX-512, four with AVX2): Winograd F(4 x 4)'s GEMMs of 16 input and output channels, each
/// a few hundred tiles by 16 x 16, without the 6 x 32 micro-kernel's padding columns or its
/// per-tile calls. The rows' distance `STEP` is a constant, so each row's reads and writes are
/// a fixed offset from the group's first.
///
/// Panics if a row would leave `a` or `out` (a runtime bug, as for [`rows_panel`]).
pub(crate) fn rows_by_square<const STEP: usize>(
    a: &[f32],
    u: &[f32; SQUARE],
    out: &mut [f32],
    rows: usize,
) {
    if rows == 0 {
        return;
    }
    assert!(
        (rows - 1) * STEP + NARROW_NR <= a.len().min(out.len()),
        "rows_by_square: rows run past their buffers"
    );
    // SAFETY: checked just above; `simd` never picks more than the CPU has.
    unsafe { rows_by_square_on::<STEP>(simd(), a, u, out, rows) }
}

/// [`rows_by_square`] on the kernels of `path`.
///
/// # Safety
/// The CPU supports `path`; `a` and `out` hold `(rows - 1) * STEP + NARROW_NR` values at least.
unsafe fn rows_by_square_on<const STEP: usize>(
    path: Simd,
    a: &[f32],
    u: &[f32; SQUARE],
    out: &mut [f32],
    rows: usize,
) {
    // SAFETY (both kernels): as the caller promises, the last row being the furthest read and
    // written.
    match path {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe {
            x86::rows_by_square_avx512::<STEP>(a.as_ptr(), u, out.as_mut_ptr(), rows)
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe {
            x86::rows_by_square_avx2::<STEP>(a.as_ptr(), u, out.as_mut_ptr(), rows)
        },
        _ => {
            for i in 0..rows {
                let a = &a[i * STEP..][..NARROW_NR];
                let out = &mut out[i * STEP..][..NARROW_NR];
                out.fill(0.0);
                for (&a, u) in a.iter().zip(u.chunks_exact(NARROW_NR)) {
                    for (o, &w) in out.iter_mut().zip(u) {
                        *o = a.mul_add(w, *o);
                    }
                }
            }
        }
    }
}

/// About how many positions the x86 [`sum_outer`] passes over with each of a tile's register
/// blocks in turn, where the tile is more than one block (AVX2): their operands (a `dy` line
/// and one or two lines of the input a position) stay in L1 for the next block.
const SUM_CHUNK_POSITIONS: usize = 128;

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
    sum_outer_cols::<MR, NR>(tile, start, a, a_rows, b, b0, g);
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
    sum_outer_cols::<NARROW_MR, NARROW_NR>(tile, start, a, a_rows, b, b0, g);
}

/// [`sum_outer`] over the first [`NARROW_NR`] columns only (of `b`, and of the tile): half a
/// wide tile, what one AVX2 register block computes in a pass over the positions. The AVX2
/// weight gradient calls it once for each half, each half's `b` packed on its own.
pub(crate) fn sum_outer_half(
    tile: &mut Tile,
    start: Start<'_>,
    a: &[f32],
    a_rows: &[usize; MR],
    b: &[f32],
    b0: usize,
    g: Grid,
) {
    sum_outer_cols::<MR, NARROW_NR>(tile, start, a, a_rows, b, b0, g);
}

/// [`sum_outer_narrow`] into a short tile of [`SHORT_MR`] rows: a weight gradient's last block
/// of a few rows (the stem's 27 reduction steps end in a block of 3), a third of the narrow
/// tile's multiply-adds for each position rather than all of them.
pub(crate) fn sum_outer_short(
    tile: &mut ShortTile,
    start: Start<'_>,
    a: &[f32],
    a_rows: &[usize; SHORT_MR],
    b: &[f32],
    b0: usize,
    g: Grid,
) {
    sum_outer_cols::<SHORT_MR, NARROW_NR>(tile, start, a, a_rows, b, b0, g);
}

/// [`sum_outer`] for a tile of `R` rows of which the first `COLS` columns are computed (the
/// others are left as they are).
fn sum_outer_cols<const R: usize, const COLS: usize>(
    tile: &mut [[f32; NR]; R],
    start: Start<'_>,
    a: &[f32],
    a_rows: &[usize; R],
    b: &[f32],
    b0: usize,
    g: Grid,
) {
    if !check_sum_outer(a, a_rows, b, b0 + COLS, g) {
        start.apply(tile, COLS);
        return;
    }
    // SAFETY: checked just above; `simd` never picks more than the CPU has.
    unsafe { sum_outer_on::<R, COLS>(simd(), tile, start, a, a_rows, b, b0, g) }
}

/// [`sum_outer_cols`] on the kernels of `path`.
///
/// # Safety
/// The CPU supports `path`, and [`check_sum_outer`] passed (and returned `true`) for the
/// arguments.
#[allow(clippy::too_many_arguments)]
unsafe fn sum_outer_on<const R: usize, const COLS: usize>(
    path: Simd,
    tile: &mut [[f32; NR]; R],
    start: Start<'_>,
    a: &[f32],
    a_rows: &[usize; R],
    b: &[f32],
    b0: usize,
    g: Grid,
) {
    // SAFETY (both kernels): the check bounds the last (largest) offset read from each operand;
    // every other offset is smaller. The CPU supports the kernel's target features.
    match path {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe {
            x86::sum_outer_avx512::<R, COLS>(tile, start, a.as_ptr(), a_rows, b.as_ptr().add(b0), g)
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe {
            x86::sum_outer_avx2::<R, COLS>(tile, start, a.as_ptr(), a_rows, b.as_ptr().add(b0), g)
        },
        _ => portable_sum_outer(tile, COLS, start, a, a_rows, b, b0, g),
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
        Simd::Avx512 => {
            return (per_step * iters as f64, unsafe {
                x86::fma_loop_avx512(iters)
            });
        }
        Simd::Avx2 => {
            return (per_step * iters as f64, unsafe {
                x86::fma_loop_avx2(iters)
            });
        }
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

/// The micro-kernel for x86-64, written once over the register type ([`x86::Lanes`]: 16-wide
/// AVX-512 or 8-wide AVX2) and the register block (`BR` rows of `BC` registers), and compiled
/// for each family by the entry points' target features:
///
/// - AVX-512: the 6 x 32 tile as one block of 6 x 2 registers; the narrow 12 x 16 tile as one
///   block of 12 x 1 (the inner step is one or two panel loads and twelve `vfmadd231ps` with
///   embedded broadcasts).
/// - AVX2 (16 registers): blocks of 6 x 2 (6 rows x 16 columns: twelve accumulators, two
///   panel registers and a broadcast), two column blocks for the wide tile and two row blocks
///   for the narrow one. The weight gradient's blocks take turns over chunks of positions
///   (`SUM_CHUNK_POSITIONS`), so the later ones read from L1.
///
/// The accumulators are an array indexed by constants only: once the block's loops are
/// unrolled the compiler keeps each in a register (a dynamically indexed array would be kept in
/// memory and stored on every step).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m512, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_max_ps,
        _mm512_min_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::{Epilogue, Grid, MR, NARROW_NR, NR, Seg, Start};

    /// A SIMD register of [`Lanes::WIDTH`] floats and the operations the micro-kernel does on
    /// it. The methods are inlined into the target-feature entry points below, so they compile
    /// to single instructions of the entry point's family.
    pub(super) trait Lanes: Copy {
        /// Floats per register.
        const WIDTH: usize;
        /// All zeros.
        ///
        /// # Safety
        /// The CPU supports the register's family.
        unsafe fn zero() -> Self;
        /// `WIDTH` floats from `p`.
        ///
        /// # Safety
        /// As for [`Lanes::zero`], and `p` points at `WIDTH` readable floats.
        unsafe fn load(p: *const f32) -> Self;
        /// Stores `v` at `p`.
        ///
        /// # Safety
        /// As for [`Lanes::zero`], and `p` points at `WIDTH` writable floats.
        unsafe fn store(p: *mut f32, v: Self);
        /// `*a * b + c` in every lane, rounded once.
        ///
        /// # Safety
        /// As for [`Lanes::zero`], and `a` points at a readable float.
        unsafe fn fma(a: *const f32, b: Self, c: Self) -> Self;
        /// `v` in every lane.
        ///
        /// # Safety
        /// As for [`Lanes::zero`].
        unsafe fn splat(v: f32) -> Self;
        /// `a + b` in every lane.
        ///
        /// # Safety
        /// As for [`Lanes::zero`].
        unsafe fn add(a: Self, b: Self) -> Self;
        /// `a * b` in every lane.
        ///
        /// # Safety
        /// As for [`Lanes::zero`].
        unsafe fn mul(a: Self, b: Self) -> Self;
        /// `if a > b { a } else { b }` in every lane (`b` when either is NaN).
        ///
        /// # Safety
        /// As for [`Lanes::zero`].
        unsafe fn max(a: Self, b: Self) -> Self;
        /// `if a < b { a } else { b }` in every lane (`b` when either is NaN).
        ///
        /// # Safety
        /// As for [`Lanes::zero`].
        unsafe fn min(a: Self, b: Self) -> Self;
    }

    impl Lanes for __m512 {
        const WIDTH: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller's CPU has AVX-512F.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: as the trait says.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            // SAFETY: as the trait says.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: *const f32, b: Self, c: Self) -> Self {
            // SAFETY: as the trait says (an embedded broadcast once inlined).
            unsafe { _mm512_fmadd_ps(_mm512_set1_ps(*a), b, c) }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: the caller's CPU has AVX-512F.
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: the caller's CPU has AVX-512F.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            // SAFETY: the caller's CPU has AVX-512F.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            // SAFETY: the caller's CPU has AVX-512F.
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: Self, b: Self) -> Self {
            // SAFETY: the caller's CPU has AVX-512F.
            unsafe { _mm512_min_ps(a, b) }
        }
    }

    impl Lanes for __m256 {
        const WIDTH: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller's CPU has AVX.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: as the trait says.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            // SAFETY: as the trait says.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: *const f32, b: Self, c: Self) -> Self {
            // SAFETY: as the trait says; the caller's CPU has FMA too.
            unsafe { _mm256_fmadd_ps(_mm256_broadcast_ss(&*a), b, c) }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: the caller's CPU has AVX.
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: the caller's CPU has AVX.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            // SAFETY: the caller's CPU has AVX.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            // SAFETY: the caller's CPU has AVX.
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: Self, b: Self) -> Self {
            // SAFETY: the caller's CPU has AVX.
            unsafe { _mm256_min_ps(a, b) }
        }
    }

    /// A register block: `BR` tile rows of `BC` registers, columns `col..col + BC * WIDTH`.
    struct Block<V, const BR: usize, const BC: usize> {
        acc: [[V; BC]; BR],
        col: usize,
    }

    impl<V: Lanes, const BR: usize, const BC: usize> Block<V, BR, BC> {
        /// Loads the block's start: zeros, the start row's columns, or the tile's own values
        /// (`tile` holds the block's `BR` rows). The kernels load it themselves: a tile written
        /// with narrower stores just before and then loaded whole stalls on store forwarding.
        ///
        /// # Safety
        /// The CPU supports `V`'s family; `col + BC * WIDTH <= NR`.
        #[inline(always)]
        unsafe fn start(tile: &[[f32; NR]], col: usize, start: Start<'_>) -> Self {
            // SAFETY: `zero` needs only the CPU's support.
            let mut acc = [[unsafe { V::zero() }; BC]; BR];
            for (i, regs) in acc.iter_mut().enumerate() {
                for (j, reg) in regs.iter_mut().enumerate() {
                    let at = col + j * V::WIDTH;
                    // SAFETY: rows hold `NR` floats, and `at + WIDTH <= NR` (the caller).
                    *reg = unsafe {
                        match start {
                            Start::Zero => V::zero(),
                            Start::Row(row) => V::load(row.as_ptr().add(at)),
                            Start::Tile => V::load(tile[i].as_ptr().add(at)),
                        }
                    };
                }
            }
            Block { acc, col }
        }

        /// One reduction step: `acc[i] += *a(i) * b[..BC * WIDTH]` for every row `i`.
        ///
        /// # Safety
        /// The CPU supports `V`'s family; `b` points at `BC * WIDTH` readable floats and each
        /// `a(i)` at one.
        #[inline(always)]
        unsafe fn step(&mut self, b: *const f32, a: impl Fn(usize) -> *const f32) {
            // SAFETY: as the caller promises.
            unsafe {
                let mut bv = [V::zero(); BC];
                for (j, reg) in bv.iter_mut().enumerate() {
                    *reg = V::load(b.add(j * V::WIDTH));
                }
                for (i, regs) in self.acc.iter_mut().enumerate() {
                    let ai = a(i);
                    for (reg, &bj) in regs.iter_mut().zip(&bv) {
                        *reg = V::fma(ai, bj, *reg);
                    }
                }
            }
        }

        /// Stores the block into its rows of `tile` (the block's `BR` rows).
        ///
        /// # Safety
        /// As for [`Block::start`].
        #[inline(always)]
        unsafe fn store(self, tile: &mut [[f32; NR]]) {
            for (row, regs) in tile.iter_mut().zip(self.acc) {
                for (j, reg) in regs.into_iter().enumerate() {
                    // SAFETY: as in `start`.
                    unsafe { V::store(row.as_mut_ptr().add(self.col + j * V::WIDTH), reg) };
                }
            }
        }
    }

    impl<V: Lanes, const BR: usize, const BC: usize> Block<V, BR, BC> {
        /// Stores the block into `out` (its first row; rows `stride` apart) through
        /// `epilogue`, whose factors start at the tile's first column and whose residual at
        /// the block's first row.
        ///
        /// # Safety
        /// The CPU supports `V`'s family; `out`, the factors and the residual cover the
        /// block's `BR` rows of `col + BC * WIDTH` columns.
        #[inline(always)]
        unsafe fn store_into(self, out: *mut f32, stride: usize, epilogue: &Epilogue<'_>) {
            // SAFETY: as the caller promises.
            unsafe {
                let clamp = epilogue.clamp.map(|(lo, hi)| (V::splat(lo), V::splat(hi)));
                for (i, regs) in self.acc.into_iter().enumerate() {
                    for (j, mut v) in regs.into_iter().enumerate() {
                        let at = self.col + j * V::WIDTH;
                        if let Some((scale, shift)) = epilogue.affine {
                            let scale = V::load(scale.as_ptr().add(at));
                            v = V::add(V::mul(v, scale), V::load(shift.as_ptr().add(at)));
                        }
                        if let Some(residual) = epilogue.residual {
                            v = V::add(v, V::load(residual.as_ptr().add(i * stride + at)));
                        }
                        if let Some((lo, hi)) = clamp {
                            // `v < lo` gives `lo`, then `v > hi` gives `hi`; NaN passes.
                            v = V::min(hi, V::max(lo, v));
                        }
                        V::store(out.add(i * stride + at), v);
                    }
                }
            }
        }
    }

    impl<V: Lanes, const BR: usize, const BC: usize> Block<V, BR, BC> {
        /// Stores the block's row `i` at `out + at[i]` (from the block's first column), or
        /// with `add` adds it into what is there (`out + v`).
        ///
        /// # Safety
        /// The CPU supports `V`'s family; each `out + at[i]` covers `col + BC * WIDTH`
        /// floats.
        #[inline(always)]
        unsafe fn store_to(self, out: *mut f32, at: &[usize], add: bool) {
            // SAFETY: as the caller promises.
            unsafe {
                for (regs, &r) in self.acc.into_iter().zip(at) {
                    for (j, v) in regs.into_iter().enumerate() {
                        let p = out.add(r + self.col + j * V::WIDTH);
                        let v = if add { V::add(V::load(p), v) } else { v };
                        V::store(p, v);
                    }
                }
            }
        }
    }

    /// [`super::rows_panel_to`] over `R` rows and the first `COLS` columns, in blocks of `BR x
    /// BC` registers, each row stored straight to its offset in `out`.
    ///
    /// # Safety
    /// The CPU supports `V`'s family; `a`, `panel` and `out` cover every offset read or
    /// written.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn rows_panel_to<
        V: Lanes,
        const R: usize,
        const COLS: usize,
        const BR: usize,
        const BC: usize,
    >(
        out: *mut f32,
        at: &[usize; R],
        add: bool,
        a: *const f32,
        rows: &[usize; R],
        segs: &[Seg],
        panel: *const f32,
    ) {
        debug_assert!(R.is_multiple_of(BR) && COLS.is_multiple_of(BC * V::WIDTH) && COLS <= NR);
        for (rows, at) in rows.chunks_exact(BR).zip(at.chunks_exact(BR)) {
            for col in (0..COLS).step_by(BC * V::WIDTH) {
                // SAFETY: the caller checked every offset read or written below.
                unsafe {
                    let mut acc = Block::<V, BR, BC>::start(&[], col, Start::Zero);
                    let mut b = panel.add(col);
                    for s in segs {
                        let mut base = [a; BR];
                        for (p, &r) in base.iter_mut().zip(rows) {
                            *p = a.add(r + s.offset);
                        }
                        for p in 0..s.len {
                            acc.step(b, |i| base[i].add(p));
                            b = b.add(NR);
                        }
                    }
                    acc.store_to(out, at, add);
                }
            }
        }
    }

    /// [`super::rows_panel_into`] over `R` rows and the first `COLS` columns, in blocks of
    /// `BR x BC` registers, each stored straight into `out` through `epilogue`.
    ///
    /// # Safety
    /// The CPU supports `V`'s family; `a`, `panel`, `out` and the epilogue's buffers cover
    /// every offset read or written.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn rows_panel_into<
        V: Lanes,
        const R: usize,
        const COLS: usize,
        const BR: usize,
        const BC: usize,
    >(
        out: *mut f32,
        stride: usize,
        epilogue: &Epilogue<'_>,
        bias: &[f32; NR],
        a: *const f32,
        rows: &[usize; R],
        segs: &[Seg],
        panel: *const f32,
    ) {
        debug_assert!(R.is_multiple_of(BR) && COLS.is_multiple_of(BC * V::WIDTH) && COLS <= NR);
        for (block, rows) in rows.chunks_exact(BR).enumerate() {
            let first = block * BR * stride;
            let epilogue = Epilogue {
                residual: epilogue.residual.map(|r| &r[first..]),
                ..*epilogue
            };
            for col in (0..COLS).step_by(BC * V::WIDTH) {
                // SAFETY: the caller checked every offset read or written below.
                unsafe {
                    let mut acc = Block::<V, BR, BC>::start(&[], col, Start::Row(bias));
                    let mut b = panel.add(col);
                    for s in segs {
                        let mut base = [a; BR];
                        for (at, &r) in base.iter_mut().zip(rows) {
                            *at = a.add(r + s.offset);
                        }
                        for p in 0..s.len {
                            acc.step(b, |i| base[i].add(p));
                            b = b.add(NR);
                        }
                    }
                    acc.store_into(out.add(first), stride, &epilogue);
                }
            }
        }
    }

    /// Runs `block(tile rows, rows' offsets, first column)` over a tile of `R` rows and `COLS`
    /// computed columns, cut into blocks of `BR` rows and `BC` registers.
    #[inline(always)]
    fn blocks<V: Lanes, const R: usize, const COLS: usize, const BR: usize, const BC: usize>(
        tile: &mut [[f32; NR]; R],
        rows: &[usize; R],
        mut block: impl FnMut(&mut [[f32; NR]], &[usize], usize),
    ) {
        debug_assert!(R.is_multiple_of(BR) && COLS.is_multiple_of(BC * V::WIDTH) && COLS <= NR);
        for (tile, rows) in tile.chunks_exact_mut(BR).zip(rows.chunks_exact(BR)) {
            for col in (0..COLS).step_by(BC * V::WIDTH) {
                block(tile, rows, col);
            }
        }
    }

    /// [`super::rows_panel`] over `R` rows and the first `COLS` columns, in blocks of `BR x
    /// BC` registers.
    ///
    /// # Safety
    /// The CPU supports `V`'s family; `a` and `panel` cover every offset read.
    #[inline(always)]
    unsafe fn rows_panel<
        V: Lanes,
        const R: usize,
        const COLS: usize,
        const BR: usize,
        const BC: usize,
    >(
        tile: &mut [[f32; NR]; R],
        start: Start<'_>,
        a: *const f32,
        rows: &[usize; R],
        segs: &[Seg],
        panel: *const f32,
    ) {
        blocks::<V, R, COLS, BR, BC>(tile, rows, |tile, rows, col| {
            // SAFETY: the caller checked every offset read below against the buffers' lengths;
            // the tile's rows hold `NR` floats each.
            unsafe {
                let mut acc = Block::<V, BR, BC>::start(tile, col, start);
                let mut b = panel.add(col);
                for s in segs {
                    let mut base = [a; BR];
                    for (at, &r) in base.iter_mut().zip(rows) {
                        *at = a.add(r + s.offset);
                    }
                    for p in 0..s.len {
                        acc.step(b, |i| base[i].add(p));
                        b = b.add(NR);
                    }
                }
                acc.store(tile);
            }
        });
    }

    /// [`super::sum_outer`] over `R` rows and the first `COLS` columns, in blocks of `BR x
    /// BC` registers; `b` points at the first position.
    ///
    /// # Safety
    /// The CPU supports `V`'s family; `a` and `b` cover every offset read.
    #[inline(always)]
    unsafe fn sum_outer<
        V: Lanes,
        const R: usize,
        const COLS: usize,
        const BR: usize,
        const BC: usize,
    >(
        tile: &mut [[f32; NR]; R],
        start: Start<'_>,
        a: *const f32,
        a_rows: &[usize; R],
        b: *const f32,
        g: Grid,
    ) {
        // The positions of images `m` and rows `rows` of each, for one register block.
        let pass = |tile: &mut [[f32; NR]],
                    a_rows: &[usize],
                    col: usize,
                    start: Start<'_>,
                    images: std::ops::Range<usize>,
                    rows: std::ops::Range<usize>| {
            // SAFETY: the caller checked the largest offset read from each operand; the tile's
            // rows hold `NR` floats each.
            unsafe {
                let mut acc = Block::<V, BR, BC>::start(tile, col, start);
                for m in images {
                    for r in rows.clone() {
                        let (pa, pb) = g.at(m, r, 0);
                        let mut base = [a; BR];
                        for (at, &ar) in base.iter_mut().zip(a_rows) {
                            *at = a.add(ar + pa);
                        }
                        let br = b.add(pb + col);
                        for c in 0..g.cols {
                            let ac = c * g.a_col;
                            acc.step(br.add(c * g.b_col), |i| base[i].add(ac));
                        }
                    }
                }
                acc.store(tile);
            }
        };
        if R == BR && COLS == BC * V::WIDTH {
            // One block: one pass over every position.
            blocks::<V, R, COLS, BR, BC>(tile, a_rows, |tile, a_rows, col| {
                pass(tile, a_rows, col, start, 0..g.images, 0..g.rows);
            });
            return;
        }
        // Several blocks (AVX2): each pass over a few rows of an image at a time, every block
        // in turn, so the blocks after the first read the chunk's `a` and `b` from L1 rather
        // than all the positions again from L2. Each block's chains go on across the chunks
        // from the values it stored in the tile.
        let chunk = (super::SUM_CHUNK_POSITIONS / g.cols.max(1)).max(1);
        let mut start = start;
        for m in 0..g.images {
            for r0 in (0..g.rows).step_by(chunk) {
                let rows = r0..(r0 + chunk).min(g.rows);
                blocks::<V, R, COLS, BR, BC>(tile, a_rows, |tile, a_rows, col| {
                    pass(tile, a_rows, col, start, m..m + 1, rows.clone());
                });
                start = Start::Tile;
            }
        }
    }

    /// [`super::rows_by_square`] on `V`'s registers: the panel in `H` registers a row (of
    /// `NARROW_NR` values), the rows in groups of `G`.
    ///
    /// # Safety
    /// The CPU supports `V`'s family; `a` and `out` cover every row read and written.
    #[inline(always)]
    unsafe fn rows_by_square<V: Lanes, const H: usize, const G: usize, const STEP: usize>(
        a: *const f32,
        u: &[f32; super::SQUARE],
        out: *mut f32,
        rows: usize,
    ) {
        // SAFETY: `u` holds `NARROW_NR` rows of `H` registers.
        let w: [[V; H]; NARROW_NR] = std::array::from_fn(|k| {
            std::array::from_fn(|h| unsafe {
                V::load(u.as_ptr().add(k * NARROW_NR + h * V::WIDTH))
            })
        });
        // SAFETY (both): the caller covers rows `..rows`.
        let mut i = 0;
        while i + G <= rows {
            unsafe { square_rows::<V, H, G, STEP>(a, &w, out, i) };
            i += G;
        }
        while i < rows {
            unsafe { square_rows::<V, H, 1, STEP>(a, &w, out, i) };
            i += 1;
        }
    }

    /// Rows `i..i + B` of [`rows_by_square`], their sums in `B x H` registers.
    ///
    /// # Safety
    /// As for [`rows_by_square`], and rows `i..i + B` are covered.
    #[inline(always)]
    unsafe fn square_rows<V: Lanes, const H: usize, const B: usize, const STEP: usize>(
        a: *const f32,
        w: &[[V; H]; NARROW_NR],
        out: *mut f32,
        i: usize,
    ) {
        // SAFETY: as the caller promises.
        unsafe {
            let mut acc = [[V::zero(); H]; B];
            for (k, w) in w.iter().enumerate() {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = a.add((i + r) * STEP + k);
                    for (s, &w) in acc.iter_mut().zip(w) {
                        *s = V::fma(a, w, *s);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (h, &s) in acc.iter().enumerate() {
                    V::store(out.add((i + r) * STEP + h * V::WIDTH), s);
                }
            }
        }
    }

    /// [`super::rows_by_square`] with AVX-512: one register a panel row, groups of 8 rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` and `out` cover every row read and written.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_by_square_avx512<const STEP: usize>(
        a: *const f32,
        u: &[f32; super::SQUARE],
        out: *mut f32,
        rows: usize,
    ) {
        // SAFETY: as the caller promises.
        unsafe { rows_by_square::<__m512, 1, 8, STEP>(a, u, out, rows) }
    }

    /// [`super::rows_by_square`] with AVX2: two registers a panel row, groups of 4 rows.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` and `out` cover every row read and written.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_by_square_avx2<const STEP: usize>(
        a: *const f32,
        u: &[f32; super::SQUARE],
        out: *mut f32,
        rows: usize,
    ) {
        // SAFETY: as the caller promises.
        unsafe { rows_by_square::<__m256, 2, 4, STEP>(a, u, out, rows) }
    }

    /// [`super::fma_loop`]: `iters` steps of each 6 x 2 register block of the 6 x 32 tile.
    ///
    /// # Safety
    /// The CPU supports `V`'s family.
    #[inline(always)]
    unsafe fn fma_loop<V: Lanes>(iters: u64) -> f32 {
        let mut tile = [[1.0f32; NR]; MR];
        let (scale, shift) = ([0.999_999f32; NR], [1e-7f32; MR]);
        for col in (0..NR).step_by(2 * V::WIDTH) {
            // SAFETY: `scale` holds `NR` floats and `shift` `MR`, all the steps read.
            unsafe {
                let mut acc = Block::<V, MR, 2>::start(&tile, col, Start::Tile);
                for _ in 0..iters {
                    acc.step(scale.as_ptr(), |i| shift.as_ptr().add(i));
                }
                acc.store(&mut tile);
            }
        }
        tile.iter().flatten().sum()
    }

    /// [`super::rows_panel_cols`] with AVX-512: a 16-column tile in blocks of 12 x 1 registers,
    /// a wider one in blocks of 6 x 2.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` and `panel` cover every offset read.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_panel_avx512<const R: usize, const COLS: usize>(
        tile: &mut [[f32; NR]; R],
        start: Start<'_>,
        a: *const f32,
        rows: &[usize; R],
        segs: &[Seg],
        panel: *const f32,
    ) {
        // SAFETY: as the caller promises.
        unsafe {
            if COLS == 16 {
                rows_panel::<__m512, R, COLS, 12, 1>(tile, start, a, rows, segs, panel);
            } else {
                rows_panel::<__m512, R, COLS, 6, 2>(tile, start, a, rows, segs, panel);
            }
        }
    }

    /// [`super::rows_panel_cols`] with AVX2: blocks of 6 x 2 registers (6 rows x 16 columns).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` and `panel` cover every offset read.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_panel_avx2<const R: usize, const COLS: usize>(
        tile: &mut [[f32; NR]; R],
        start: Start<'_>,
        a: *const f32,
        rows: &[usize; R],
        segs: &[Seg],
        panel: *const f32,
    ) {
        // SAFETY: as the caller promises.
        unsafe { rows_panel::<__m256, R, COLS, 6, 2>(tile, start, a, rows, segs, panel) }
    }

    /// [`super::rows_panel_into`] with AVX-512, blocked as [`rows_panel_avx512`].
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a`, `panel`, `out` and the epilogue's buffers cover every offset
    /// read or written.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_panel_into_avx512<const R: usize, const COLS: usize>(
        out: *mut f32,
        stride: usize,
        epilogue: &Epilogue<'_>,
        bias: &[f32; NR],
        a: *const f32,
        rows: &[usize; R],
        segs: &[Seg],
        panel: *const f32,
    ) {
        // SAFETY: as the caller promises.
        unsafe {
            if COLS == 16 {
                rows_panel_into::<__m512, R, COLS, 12, 1>(
                    out, stride, epilogue, bias, a, rows, segs, panel,
                );
            } else {
                rows_panel_into::<__m512, R, COLS, 6, 2>(
                    out, stride, epilogue, bias, a, rows, segs, panel,
                );
            }
        }
    }

    /// [`super::rows_panel_into`] with AVX2, blocked as [`rows_panel_avx2`].
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a`, `panel`, `out` and the epilogue's buffers cover every
    /// offset read or written.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_panel_into_avx2<const R: usize, const COLS: usize>(
        out: *mut f32,
        stride: usize,
        epilogue: &Epilogue<'_>,
        bias: &[f32; NR],
        a: *const f32,
        rows: &[usize; R],
        segs: &[Seg],
        panel: *const f32,
    ) {
        // SAFETY: as the caller promises.
        unsafe {
            rows_panel_into::<__m256, R, COLS, 6, 2>(
                out, stride, epilogue, bias, a, rows, segs, panel,
            )
        }
    }

    /// [`super::rows_panel_to`] with AVX-512, blocked as [`rows_panel_avx512`].
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a`, `panel` and `out` cover every offset read or written.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_panel_to_avx512<const R: usize, const COLS: usize>(
        out: *mut f32,
        at: &[usize; R],
        add: bool,
        a: *const f32,
        rows: &[usize; R],
        segs: &[Seg],
        panel: *const f32,
    ) {
        // SAFETY: as the caller promises.
        unsafe {
            if COLS == 16 {
                rows_panel_to::<__m512, R, COLS, 12, 1>(out, at, add, a, rows, segs, panel);
            } else {
                rows_panel_to::<__m512, R, COLS, 6, 2>(out, at, add, a, rows, segs, panel);
            }
        }
    }

    /// [`super::rows_panel_to`] with AVX2, blocked as [`rows_panel_avx2`].
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a`, `panel` and `out` cover every offset read or written.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_panel_to_avx2<const R: usize, const COLS: usize>(
        out: *mut f32,
        at: &[usize; R],
        add: bool,
        a: *const f32,
        rows: &[usize; R],
        segs: &[Seg],
        panel: *const f32,
    ) {
        // SAFETY: as the caller promises.
        unsafe { rows_panel_to::<__m256, R, COLS, 6, 2>(out, at, add, a, rows, segs, panel) }
    }

    /// [`super::sum_outer_cols`] with AVX-512, blocked as [`rows_panel_avx512`].
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` and `b` cover every offset read.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_outer_avx512<const R: usize, const COLS: usize>(
        tile: &mut [[f32; NR]; R],
        start: Start<'_>,
        a: *const f32,
        a_rows: &[usize; R],
        b: *const f32,
        g: Grid,
    ) {
        // SAFETY: as the caller promises.
        unsafe {
            if COLS == 16 && R <= MR {
                sum_outer::<__m512, R, COLS, R, 1>(tile, start, a, a_rows, b, g);
            } else if COLS == 16 {
                sum_outer::<__m512, R, COLS, 12, 1>(tile, start, a, a_rows, b, g);
            } else {
                sum_outer::<__m512, R, COLS, 6, 2>(tile, start, a, a_rows, b, g);
            }
        }
    }

    /// [`super::sum_outer_cols`] with AVX2, blocked as [`rows_panel_avx2`].
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` and `b` cover every offset read.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_outer_avx2<const R: usize, const COLS: usize>(
        tile: &mut [[f32; NR]; R],
        start: Start<'_>,
        a: *const f32,
        a_rows: &[usize; R],
        b: *const f32,
        g: Grid,
    ) {
        // SAFETY: as the caller promises.
        unsafe {
            if R == super::SHORT_MR {
                sum_outer::<__m256, R, COLS, { super::SHORT_MR }, 2>(tile, start, a, a_rows, b, g);
            } else {
                sum_outer::<__m256, R, COLS, 6, 2>(tile, start, a, a_rows, b, g);
            }
        }
    }

    /// [`super::fma_loop`] with AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_loop_avx512(iters: u64) -> f32 {
        // SAFETY: as the caller promises.
        unsafe { fma_loop::<__m512>(iters) }
    }

    /// [`super::fma_loop`] with AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_loop_avx2(iters: u64) -> f32 {
        // SAFETY: as the caller promises.
        unsafe { fma_loop::<__m256>(iters) }
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

    /// Every path this CPU runs: each of the rows (groups of eight and four, and the single
    /// rows after them) is the definition's chain over the square bit for bit, and the values
    /// between the rows stay as they were.
    #[test]
    fn rows_by_square_is_one_fma_chain_per_element() {
        const STEP: usize = 21;
        let rows = 15;
        let a = values(rows * STEP, 9);
        let u: [f32; SQUARE] = values(SQUARE, 10).try_into().expect("SQUARE values");
        for path in paths() {
            let mut out = vec![f32::NAN; rows * STEP];
            // SAFETY: `paths` holds what the CPU runs; both buffers hold `rows` rows.
            unsafe { rows_by_square_on::<STEP>(path, &a, &u, &mut out, rows) };
            for i in 0..rows {
                for l in 0..STEP {
                    let got = out[i * STEP + l];
                    if l >= NARROW_NR {
                        assert!(got.is_nan(), "{path:?} ({i}, {l}) written");
                        continue;
                    }
                    let steps = (0..NARROW_NR).map(|k| (a[i * STEP + k], u[k * NARROW_NR + l]));
                    let want = chain(steps, 0.0);
                    assert_eq!(got.to_bits(), want.to_bits(), "{path:?} ({i}, {l})");
                }
            }
        }
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
                unsafe {
                    rows_panel_on::<MR, NR>(path, &mut wide, start, a, wide_rows, &segs, panel)
                };
                check(&wide, NR, "rows_panel", false);
                let mut narrow = init;
                // SAFETY: as above.
                unsafe {
                    rows_panel_on::<NARROW_MR, NARROW_NR>(
                        path,
                        &mut narrow,
                        start,
                        a,
                        &rows,
                        &segs,
                        panel,
                    )
                };
                check(&narrow, NARROW_NR, "rows_panel_narrow", false);
                if matches!(start, Start::Row(_)) {
                    continue;
                }
                assert!(check_sum_outer(a, &a_rows, panel, b0 + NR, g));
                let mut wide: Tile = std::array::from_fn(|i| init[i]);
                let wide_rows = a_rows[..MR].try_into().expect("MR rows");
                // SAFETY: as above.
                unsafe {
                    sum_outer_on::<MR, NR>(path, &mut wide, start, a, wide_rows, panel, b0, g)
                };
                check(&wide, NR, "sum_outer", true);
                let mut narrow = init;
                // SAFETY: as above.
                unsafe {
                    sum_outer_on::<NARROW_MR, NARROW_NR>(
                        path,
                        &mut narrow,
                        start,
                        a,
                        &a_rows,
                        panel,
                        b0,
                        g,
                    )
                };
                check(&narrow, NARROW_NR, "sum_outer_narrow", true);
                let mut short: ShortTile = std::array::from_fn(|i| init[i]);
                let short_rows = a_rows[..SHORT_MR].try_into().expect("SHORT_MR rows");
                // SAFETY: as above.
                unsafe {
                    sum_outer_on::<SHORT_MR, NARROW_NR>(
                        path, &mut short, start, a, short_rows, panel, b0, g,
                    )
                };
                check(&short, NARROW_NR, "sum_outer_short", true);
            }
        }
    }

    /// Grids longer than a chunk of positions ([`SUM_CHUNK_POSITIONS`]: several chunks in
    /// an image, the last partial; rows longer than a chunk; several images), on every path,
    /// wide, narrow and short tiles, from zeros and from the tile: each element is the chain
    /// over every position in order, bit for bit, however the blocks take turns.
    #[test]
    fn sum_outer_over_many_positions_is_one_fma_chain_per_element() {
        let chunk = SUM_CHUNK_POSITIONS;
        for (images, rows, cols) in [(2, 3 * chunk / 5 + 1, 5), (3, 2, chunk + 3), (1, 1, 1)] {
            let g = Grid {
                images,
                rows,
                cols,
                a_image: rows * (cols * 3 + 1) + 17,
                a_row: cols * 3 + 1,
                a_col: 3,
                b_image: rows * (cols * 20 + 4) + 9,
                b_row: cols * 20 + 4,
                b_col: 20,
            };
            let a = values(images * g.a_image + 40, 9);
            let b = values(images * g.b_image + NR, 10);
            let a_rows = [0, 1, 2, 5, 30, 31, 32, 33, 7, 8, 9, 10];
            let init = values(NARROW_MR * NR, 11);
            let init: NarrowTile =
                std::array::from_fn(|i| std::array::from_fn(|j| init[i * NR + j]));
            let chain = |ar: usize, j: usize, first: f32| {
                let mut acc = first;
                for m in 0..g.images {
                    for r in 0..g.rows {
                        for c in 0..g.cols {
                            let (pa, pb) = g.at(m, r, c);
                            acc = a[ar + pa].mul_add(b[pb + j], acc);
                        }
                    }
                }
                acc
            };
            assert!(check_sum_outer(&a, &a_rows, &b, NR, g));
            for path in paths() {
                for start in [Start::Zero, Start::Tile] {
                    let check = |tile: &[[f32; NR]], cols: usize, what: &str| {
                        for (i, got) in tile.iter().enumerate() {
                            for (j, &got) in got.iter().enumerate() {
                                let want = match (j < cols, start) {
                                    (false, _) => init[i][j],
                                    (true, Start::Zero) => chain(a_rows[i], j, 0.0),
                                    (true, _) => chain(a_rows[i], j, init[i][j]),
                                };
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{path:?} {what} {start:?} {images}x{rows}x{cols} ({i}, {j})"
                                );
                            }
                        }
                    };
                    let mut wide: Tile = std::array::from_fn(|i| init[i]);
                    let wide_rows = a_rows[..MR].try_into().expect("MR rows");
                    // SAFETY: `paths` holds what the CPU runs; the reads were checked above.
                    unsafe {
                        sum_outer_on::<MR, NR>(path, &mut wide, start, &a, wide_rows, &b, 0, g)
                    };
                    check(&wide, NR, "sum_outer");
                    let mut narrow = init;
                    // SAFETY: as above.
                    unsafe {
                        sum_outer_on::<NARROW_MR, NARROW_NR>(
                            path,
                            &mut narrow,
                            start,
                            &a,
                            &a_rows,
                            &b,
                            0,
                            g,
                        )
                    };
                    check(&narrow, NARROW_NR, "sum_outer_narrow");
                    let mut short: ShortTile = std::array::from_fn(|i| init[i]);
                    let short_rows = a_rows[..SHORT_MR].try_into().expect("SHORT_MR rows");
                    // SAFETY: as above.
                    unsafe {
                        sum_outer_on::<SHORT_MR, NARROW_NR>(
                            path, &mut short, start, &a, short_rows, &b, 0, g,
                        )
                    };
                    check(&short, NARROW_NR, "sum_outer_short");
                }
            }
        }
    }

    /// The reference for [`rows_panel_into`]: the tile from the start row, then each value
    /// through the epilogue as the separate layers compute it (`v * scale + shift`, `+ r`,
    /// `v < lo` gives `lo`, `v > hi` gives `hi`).
    fn into_reference<const R: usize>(
        tile: &[[f32; NR]; R],
        cols: usize,
        stride: usize,
        epilogue: &Epilogue<'_>,
        out: &mut [f32],
    ) {
        for (r, row) in tile.iter().enumerate() {
            for (c, &v) in row[..cols].iter().enumerate() {
                let mut v = v;
                if let Some((scale, shift)) = epilogue.affine {
                    v = v * scale[c] + shift[c];
                }
                if let Some(residual) = epilogue.residual {
                    v += residual[r * stride + c];
                }
                if let Some((lo, hi)) = epilogue.clamp {
                    v = if v < lo { lo } else { v };
                    v = if v > hi { hi } else { v };
                }
                out[r * stride + c] = v;
            }
        }
    }

    /// The bits of stored values, every NaN as one: which NaN an add of two NaNs (or of a NaN
    /// and an invalid product's default NaN) returns depends on its operands' order, which the
    /// compiler may swap in the kernels and in the reference alike (IEEE 754 leaves it open).
    /// Every other value, signed zeros and infinities included, must match bit for bit.
    fn epilogue_bits(v: &[f32]) -> Vec<u32> {
        v.iter()
            .map(|v| if v.is_nan() { f32::NAN } else { *v }.to_bits())
            .collect()
    }

    /// Values with the edge cases an epilogue must pass through unchanged: NaN, signed zeros,
    /// infinities, and values either side of a ReLU6's bounds.
    fn edgy(len: usize, seed: usize) -> Vec<f32> {
        let special = [
            f32::NAN,
            -0.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            6.0,
            -7.5,
            9.25,
        ];
        (0..len)
            .map(|i| match (i * 31 + seed * 17) % 29 {
                k if k < special.len() => special[k],
                _ => (((i + seed) * 7919) % 203) as f32 / 20.0 - 5.0,
            })
            .collect()
    }

    /// One case of [`rows_panel_into`] on every path this CPU runs, wide and narrow: each value
    /// stored is, bit for bit, the kernel's tile through the epilogue's definition; the rest of
    /// the output is untouched.
    #[allow(clippy::too_many_arguments)]
    fn check_into_case<const R: usize, const COLS: usize>(
        a: &[f32],
        panel: &[f32],
        rows: &[usize; R],
        segs: &[Seg],
        stride: usize,
        at: usize,
        factors: &[f32],
        residual: &[f32],
        (affine, add, clamp): (bool, bool, Option<(f32, f32)>),
    ) {
        let table = RunTable::new(segs.to_vec());
        let bias: [f32; NR] = std::array::from_fn(|j| panel[j] * 0.5);
        let epilogue = Epilogue {
            affine: affine.then(|| (&factors[..COLS], &factors[NR..NR + COLS])),
            residual: add.then(|| &residual[at..]),
            clamp,
        };
        let len = at + (R - 1) * stride + COLS + 5;
        for path in paths() {
            let mut want = vec![-1234.5; len];
            let mut tile = [[0.0; NR]; R];
            check_rows_panel(a, rows, table.all(), panel);
            // SAFETY: `paths` holds what the CPU runs; `check_rows_panel` bounds the reads.
            unsafe {
                rows_panel_on::<R, COLS>(path, &mut tile, Start::Row(&bias), a, rows, segs, panel)
            };
            into_reference(&tile, COLS, stride, &epilogue, &mut want[at..]);
            let mut got = vec![-1234.5; len];
            check_into::<R, COLS>(len - at, stride, &epilogue);
            // SAFETY: as above, and `check_into` bounds the writes and the epilogue's reads.
            unsafe {
                rows_panel_into_on::<R, COLS>(
                    path,
                    &mut got[at..],
                    stride,
                    &epilogue,
                    &bias,
                    a,
                    rows,
                    table.all(),
                    panel,
                )
            };
            assert_eq!(
                epilogue_bits(&got),
                epilogue_bits(&want),
                "{path:?} {R} x {COLS} {epilogue:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// The kernels that store straight into the output, over run shapes, row offsets,
        /// output strides and offsets, and every form of the epilogue, wide and narrow.
        #[test]
        fn storing_into_the_output_is_the_tile_through_the_epilogue(
            seed in 0usize..1000,
            runs in proptest::collection::vec((0usize..60, 1usize..20), 1..4),
            offsets in proptest::collection::vec(0usize..400, NARROW_MR),
            extra in 0usize..40,
            at in 0usize..7,
            affine: bool,
            add: bool,
            clamp in 0usize..4,
        ) {
            let segs: Vec<Seg> = runs.iter().map(|&(offset, len)| Seg { offset, len }).collect();
            let steps: usize = segs.iter().map(|s| s.len).sum();
            // Finite sums; the epilogue's operands carry the edge cases.
            let a = values(400 + 80, seed);
            let panel = values(steps * NR, seed + 1);
            let factors = edgy(2 * NR, seed + 2);
            let clamp = [None, Some((0.0, f32::INFINITY)), Some((0.0, 6.0)), Some((-1.0, 2.5))][clamp];
            let narrow: [usize; NARROW_MR] = offsets.clone().try_into().expect("NARROW_MR offsets");
            let wide: [usize; MR] = offsets[..MR].try_into().expect("MR offsets");
            let stride = NR + extra;
            let residual = edgy(at + NARROW_MR * stride, seed + 3);
            let form = (affine, add, clamp);
            check_into_case::<MR, NR>(&a, &panel, &wide, &segs, stride, at, &factors, &residual, form);
            let stride = NARROW_NR + extra;
            check_into_case::<NARROW_MR, NARROW_NR>(
                &a, &panel, &narrow, &segs, stride, at, &factors, &residual, form,
            );
        }
    }

    /// One case of [`rows_panel_to`] on every path this CPU runs: each row is, bit for bit, the
    /// kernel's tile from zeros written at its offset (or added into what `out` held, `out +
    /// v`); the rest of `out` is untouched.
    fn check_to_case<const R: usize, const COLS: usize>(
        a: &[f32],
        panel: &[f32],
        rows: &[usize; R],
        segs: &[Seg],
        at: &[usize; R],
        held: &[f32],
        add: bool,
    ) {
        let table = RunTable::new(segs.to_vec());
        for path in paths() {
            let mut tile = [[0.0; NR]; R];
            check_rows_panel(a, rows, table.all(), panel);
            // SAFETY: `paths` holds what the CPU runs; `check_rows_panel` bounds the reads.
            unsafe { rows_panel_on::<R, COLS>(path, &mut tile, Start::Zero, a, rows, segs, panel) };
            let mut want = held.to_vec();
            for (row, &r) in tile.iter().zip(at) {
                for (w, &v) in want[r..r + COLS].iter_mut().zip(row) {
                    *w = if add { *w + v } else { v };
                }
            }
            let mut got = held.to_vec();
            check_to::<COLS>(got.len(), at);
            // SAFETY: as above, and `check_to` bounds the writes.
            unsafe {
                rows_panel_to_on::<R, COLS>(path, &mut got, at, add, a, rows, table.all(), panel)
            };
            assert_eq!(
                epilogue_bits(&got),
                epilogue_bits(&want),
                "{path:?} {R} x {COLS} add {add}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// The kernels that store each row at its own offset (the input gradient's pixels),
        /// written or added into values with signed zeros, infinities and NaN, wide and
        /// narrow, rows evenly spaced or not.
        #[test]
        fn storing_to_pixels_is_the_tile_written_or_added(
            seed in 0usize..1000,
            runs in proptest::collection::vec((0usize..60, 1usize..20), 1..4),
            offsets in proptest::collection::vec(0usize..400, NARROW_MR),
            gaps in proptest::collection::vec(0usize..40, NARROW_MR),
            add: bool,
        ) {
            let segs: Vec<Seg> = runs.iter().map(|&(offset, len)| Seg { offset, len }).collect();
            let steps: usize = segs.iter().map(|s| s.len).sum();
            let a = values(400 + 80, seed);
            let panel = values(steps * NR, seed + 1);
            // Row `i` starts `gaps[i]` after the end of the row before (the first at `gaps[0]`).
            let at = |cols: usize| {
                gaps.iter().scan(0, move |end, &gap| {
                    let at = *end + gap;
                    *end = at + cols;
                    Some(at)
                })
            };
            let narrow: [usize; NARROW_MR] = offsets.clone().try_into().expect("NARROW_MR offsets");
            let wide: [usize; MR] = offsets[..MR].try_into().expect("MR offsets");
            let to_wide: Vec<usize> = at(NR).take(MR).collect();
            let held = edgy(to_wide[MR - 1] + NR + 7, seed + 2);
            let to_wide = to_wide.try_into().expect("MR offsets");
            check_to_case::<MR, NR>(&a, &panel, &wide, &segs, &to_wide, &held, add);
            let to_narrow: Vec<usize> = at(NARROW_NR).collect();
            let held = edgy(to_narrow[NARROW_MR - 1] + NARROW_NR + 7, seed + 3);
            let to_narrow = to_narrow.try_into().expect("NARROW_MR offsets");
            check_to_case::<NARROW_MR, NARROW_NR>(&a, &panel, &narrow, &segs, &to_narrow, &held, add);
        }
    }

    /// Rows stored at offsets out of order, overlapping or past the output are refused.
    #[test]
    fn storing_rows_that_overlap_or_run_past_is_refused() {
        let fits = std::panic::catch_unwind(|| check_to::<NR>(100, &[0, 32, 68]));
        assert!(fits.is_ok());
        for (len, at) in [(100, [0, 31, 68]), (100, [32, 0, 68]), (99, [0, 32, 68])] {
            assert!(std::panic::catch_unwind(|| check_to::<NR>(len, &at)).is_err());
        }
    }

    /// A tile that would run past its output, or an epilogue too short for it, is refused.
    #[test]
    fn storing_into_a_short_output_is_refused() {
        let fits = std::panic::catch_unwind(|| {
            check_into::<MR, NR>(5 * 40 + NR, 40, &Epilogue::default())
        });
        assert!(fits.is_ok());
        let short = std::panic::catch_unwind(|| {
            check_into::<MR, NR>(5 * 40 + NR - 1, 40, &Epilogue::default())
        });
        assert!(short.is_err());
        let narrow_stride =
            std::panic::catch_unwind(|| check_into::<MR, NR>(10_000, NR - 1, &Epilogue::default()));
        assert!(narrow_stride.is_err());
        let residual = [0.0; 5 * 40 + NR - 1];
        let epilogue = Epilogue {
            residual: Some(&residual),
            ..Epilogue::default()
        };
        assert!(std::panic::catch_unwind(|| check_into::<MR, NR>(10_000, 40, &epilogue)).is_err());
    }

    /// The kernels' rate on each path this CPU runs, against that path's own peak (the
    /// `fma_loop` step), for the shapes of ResNet-20's and the seed model's convolutions, operands
    /// in L1: the fastest of many short calls, so a loaded machine's preemptions drop out. Then
    /// ResNet-20's three stages as their layers call the kernels (`replay_layer`), timed in the
    /// thread's CPU time.
    /// `cargo test --release -p cnnc-runtime --lib kernel_rates -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing report, not a check"]
    fn kernel_rates() {
        use std::time::Instant;
        /// GFLOP/s of the fastest of `reps` rounds of `calls` calls of `f`, each `flops`.
        fn rate(flops: f64, mut f: impl FnMut()) -> f64 {
            let (calls, reps) = (64, 400);
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let t = Instant::now();
                for _ in 0..calls {
                    f();
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            flops * calls as f64 / best / 1e9
        }
        /// GFLOP/s of the fastest of 15 calls of `f`, each `flops`.
        fn rate_once(flops: f64, mut f: impl FnMut()) -> f64 {
            let mut best = f64::INFINITY;
            for _ in 0..15 {
                let t = Instant::now();
                f();
                best = best.min(t.elapsed().as_secs_f64());
            }
            flops / best / 1e9
        }
        // (what, pixel stride in `a`, runs, run length, narrow)
        let shapes = [
            ("3x3 16->16 (narrow)", 16, 3, 48, true),
            ("3x3 32->32", 32, 3, 96, false),
            ("3x3 64->64", 64, 3, 192, false),
            ("seed 5x5 3->32 (K=75)", 3, 5, 15, false),
            ("seed 5x5 32->32", 32, 5, 160, false),
            ("1x1 16->32", 16, 1, 16, false),
        ];
        for path in paths() {
            if path == Simd::None {
                continue;
            }
            // SAFETY: `paths` holds what the CPU runs.
            let peak = rate((2 * MR * NR * 1000) as f64, || unsafe {
                std::hint::black_box(match path {
                    Simd::Avx512 => x86::fma_loop_avx512(1000),
                    _ => x86::fma_loop_avx2(1000),
                });
            });
            println!("{path:?}: peak {peak:.1} GFLOP/s (one thread)");
            // The forward pass over a batch: consecutive tiles of pixels of a 4 MiB input,
            // each against the whole panel (which L1 does not hold past K = 64).
            for (what, cin, kw, narrow) in [
                ("3x3 16->16 (narrow)", 16, 3, true),
                ("3x3 32->32", 32, 3, false),
                ("3x3 64->64", 64, 3, false),
                ("seed 5x5 3->32 (K=75)", 3, 5, false),
                ("seed 5x5 32->32", 32, 5, false),
            ] {
                let (rows, cols) = if narrow {
                    (NARROW_MR, NARROW_NR)
                } else {
                    (MR, NR)
                };
                let row_len = 34 * cin;
                let segs: Vec<Seg> = (0..kw)
                    .map(|r| Seg {
                        offset: r * row_len,
                        len: kw * cin,
                    })
                    .collect();
                let steps = kw * kw * cin;
                let pixels = (1 << 20) / cin / rows * rows;
                let a = values(pixels * cin + kw * row_len + 64, 1);
                let panel = values(steps * NR, 2);
                let tiles = pixels / rows - 2 * row_len / cin;
                let flops = (2 * rows * cols * steps * tiles) as f64;
                let mut tile = [[0.0f32; NR]; NARROW_MR];
                let got = rate_once(flops, || {
                    for t in 0..tiles {
                        let at: [usize; NARROW_MR] = std::array::from_fn(|i| (t * rows + i) * cin);
                        // SAFETY: every read lies inside `a` and `panel` (sized above).
                        unsafe {
                            if narrow {
                                rows_panel_on::<NARROW_MR, NARROW_NR>(
                                    path,
                                    &mut tile,
                                    Start::Zero,
                                    &a,
                                    &at,
                                    &segs,
                                    &panel,
                                );
                            } else {
                                let wide: &mut Tile = (&mut tile[..MR]).try_into().expect("MR");
                                let at: &[usize; MR] = at[..MR].try_into().expect("MR");
                                rows_panel_on::<MR, NR>(
                                    path,
                                    wide,
                                    Start::Zero,
                                    &a,
                                    at,
                                    &segs,
                                    &panel,
                                );
                            }
                        }
                        std::hint::black_box(&mut tile);
                    }
                });
                println!(
                    "  batch      {what:24} {got:6.1} GFLOP/s {:5.1} % of peak",
                    100.0 * got / peak
                );
            }
            for (what, stride, runs, len, narrow) in shapes {
                let segs: Vec<Seg> = (0..runs)
                    .map(|r| Seg {
                        offset: r * 40 * stride,
                        len,
                    })
                    .collect();
                let steps = runs * len;
                let a = values(runs * 40 * stride + 12 * stride + len, 1);
                let panel = values(steps * NR, 2);
                let (rows, cols) = if narrow {
                    (NARROW_MR, NARROW_NR)
                } else {
                    (MR, NR)
                };
                let flops = (2 * rows * cols * steps) as f64;
                let mut tile = [[0.0f32; NR]; NARROW_MR];
                let at: [usize; NARROW_MR] = std::array::from_fn(|i| i * stride);
                let got = if narrow {
                    // SAFETY: every read lies inside `a` and `panel` (sized above).
                    rate(flops, || unsafe {
                        rows_panel_on::<NARROW_MR, NARROW_NR>(
                            path,
                            &mut tile,
                            Start::Zero,
                            &a,
                            &at,
                            &segs,
                            &panel,
                        );
                        std::hint::black_box(&mut tile);
                    })
                } else {
                    let mut wide: Tile = [[0.0; NR]; MR];
                    let at: [usize; MR] = std::array::from_fn(|i| at[i]);
                    // SAFETY: as above.
                    rate(flops, || unsafe {
                        rows_panel_on::<MR, NR>(
                            path,
                            &mut wide,
                            Start::Zero,
                            &a,
                            &at,
                            &segs,
                            &panel,
                        );
                        std::hint::black_box(&mut wide);
                    })
                };
                println!(
                    "  rows_panel {what:24} {got:6.1} GFLOP/s {:5.1} % of peak",
                    100.0 * got / peak
                );
            }
            // The weight gradient: 6 (or 12) rows of the padded input against `dy`, over the
            // pixels of 16 x 16 images (cin 16 or 32: a pixel's channels are `cin` apart).
            for (what, cin, narrow) in [
                ("wgrad 16 ch (narrow)", 16, true),
                ("wgrad 32 ch", 32, false),
                ("wgrad 64 ch, 8 images", 64, false),
            ] {
                let images = if cin == 64 { 8 } else { 2 };
                let (rows, cols) = if narrow {
                    (NARROW_MR, NARROW_NR)
                } else {
                    (MR, NR)
                };
                let g = Grid {
                    images,
                    rows: 16,
                    cols: 16,
                    a_image: 18 * 18 * cin,
                    a_row: 18 * cin,
                    a_col: cin,
                    b_image: 256 * cols,
                    b_row: 16 * cols,
                    b_col: cols,
                };
                let a = values(images * 18 * 18 * cin + 16, 3);
                let b = values(images * 256 * cols + NR, 4);
                let flops = (2 * rows * cols * 256 * images) as f64;
                let a_rows: [usize; NARROW_MR] = std::array::from_fn(|i| i);
                let got = if narrow {
                    let mut tile = [[0.0f32; NR]; NARROW_MR];
                    // SAFETY: every read lies inside `a` and `b` (sized above).
                    rate(flops, || unsafe {
                        sum_outer_on::<NARROW_MR, NARROW_NR>(
                            path,
                            &mut tile,
                            Start::Zero,
                            &a,
                            &a_rows,
                            &b,
                            0,
                            g,
                        );
                        std::hint::black_box(&mut tile);
                    })
                } else {
                    let mut tile: Tile = [[0.0; NR]; MR];
                    let a_rows: [usize; MR] = std::array::from_fn(|i| a_rows[i]);
                    // SAFETY: as above.
                    rate(flops, || unsafe {
                        sum_outer_on::<MR, NR>(path, &mut tile, Start::Zero, &a, &a_rows, &b, 0, g);
                        std::hint::black_box(&mut tile);
                    })
                };
                println!(
                    "  sum_outer  {what:24} {got:6.1} GFLOP/s {:5.1} % of peak",
                    100.0 * got / peak
                );
            }
            // ResNet-20's 3x3 stride-1 layers at batch 64, the kernels called as the layer
            // calls them: the forward (and the input gradient, the same shape when `cin ==
            // cout`) over every output pixel of the padded batch in tiles of consecutive pixels
            // (tiles cross image rows and images), and the weight gradient's row blocks over the
            // images in the groups `conv/backward.rs` makes (`dy` staged with a border). The
            // operands stream from L2 and memory as in the layer; thread CPU time, fastest of 5.
            for (what, c, side) in [
                ("stage 1, 16 ch 32x32", 16, 32),
                ("stage 2, 32 ch 16x16", 32, 16),
                ("stage 3, 64 ch 8x8", 64, 8),
            ] {
                let [fwd, wgrad, sliced] = replay_layer(path, c, side, 64);
                println!(
                    "  layer fwd  {what:24} {:6.1} GFLOP/s {:5.1} % of peak",
                    fwd,
                    100.0 * fwd / peak
                );
                println!(
                    "  layer wgr  {what:24} {:6.1} GFLOP/s {:5.1} % of peak",
                    wgrad,
                    100.0 * wgrad / peak
                );
                if path == Simd::Avx2 && c > NARROW_NR {
                    println!(
                        "  layer wgr  {:24} {:6.1} GFLOP/s {:5.1} % of peak",
                        "  dy sliced (as the layer)",
                        sliced,
                        100.0 * sliced / peak
                    );
                }
            }
        }
    }

    /// Seconds of CPU time this thread has run: unlike wall time, it stops while the thread is
    /// preempted, so timings on a loaded machine stay meaningful.
    #[cfg(target_os = "linux")]
    fn thread_cpu_s() -> f64 {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        unsafe extern "C" {
            fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `ts` is a valid `struct timespec` for the call to fill.
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        ts.sec as f64 + ts.nsec as f64 * 1e-9
    }

    /// Elsewhere, seconds of wall time since the first call.
    #[cfg(not(target_os = "linux"))]
    fn thread_cpu_s() -> f64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
    }

    /// GFLOP/s of the fastest of 5 calls of `f` (each `flops`), in thread CPU time.
    fn rate_cpu(flops: f64, mut f: impl FnMut()) -> f64 {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = thread_cpu_s();
            f();
            best = best.min(thread_cpu_s() - t);
        }
        flops / best / 1e9
    }

    /// The forward's and the weight gradient's GFLOP/s on `path` for a 3x3 stride-1 `c -> c`
    /// convolution over `batch` images of `side x side`, the kernels called as the layer calls
    /// them (see `kernel_rates`).
    fn replay_layer(path: Simd, c: usize, side: usize, batch: usize) -> [f64; 3] {
        let wp = side + 2;
        let image = wp * wp * c;
        let k = 9 * c;
        let narrow = c <= NARROW_NR;
        let (tile_rows, cols) = if narrow {
            (NARROW_MR, NARROW_NR)
        } else {
            (MR, NR)
        };
        // The padded input (and, the same layout, the staged `dy` and the padded `dy`).
        let xp = values(batch * image, 1);
        let dyp = values(batch * image, 2);
        let packed = values(panels(c) * k * NR, 3);
        let segs: Vec<Seg> = (0..3)
            .map(|ky| Seg {
                offset: ky * wp * c,
                len: 3 * c,
            })
            .collect();
        let pixels = batch * side * side;
        let at = |p: usize| {
            let (n, y, x) = (p / (side * side), p / side % side, p % side);
            n * image + (y * wp + x) * c
        };
        let tiles = pixels.div_ceil(tile_rows);
        // The last pixel's window ends the batch; the panels hold `k` rows each.
        assert!(at(pixels - 1) + 2 * wp * c + 3 * c <= xp.len());
        assert!(packed.len() >= panels(c) * k * NR);
        let mut tile = [[0.0f32; NR]; NARROW_MR];
        let flops = (2 * tiles * tile_rows * k * c) as f64;
        let fwd = rate_cpu(flops, || {
            for t in 0..tiles {
                let rows: [usize; NARROW_MR] =
                    std::array::from_fn(|i| at((t * tile_rows + i).min(pixels - 1)));
                // SAFETY: every read lies inside `xp` and `packed` (asserted above); `paths`
                // holds what the CPU runs.
                unsafe {
                    if narrow {
                        rows_panel_on::<NARROW_MR, NARROW_NR>(
                            path,
                            &mut tile,
                            Start::Zero,
                            &xp,
                            &rows,
                            &segs,
                            &packed,
                        );
                    } else {
                        let wide: &mut Tile = (&mut tile[..MR]).try_into().expect("MR");
                        let rows: &[usize; MR] = rows[..MR].try_into().expect("MR");
                        for j in 0..panels(c) {
                            let panel = &packed[j * k * NR..];
                            rows_panel_on::<MR, NR>(
                                path,
                                wide,
                                Start::Zero,
                                &xp,
                                rows,
                                &segs,
                                panel,
                            );
                        }
                    }
                }
                std::hint::black_box(&mut tile);
            }
        });
        // The weight gradient: rows `(ky, kx, ci)` in blocks of a tile's rows, `cs = c`
        // columns, images in groups of half an L2 (`WGRAD_GROUP_BYTES`).
        let group = (512 * 1024 / (2 * image * size_of::<f32>())).clamp(1, batch);
        let offsets: Vec<usize> = (0..k)
            .map(|j| {
                let (tap, ci) = (j / c, j % c);
                ((tap / 3) * wp + tap % 3) * c + ci
            })
            .collect();
        let blocks = k / tile_rows;
        let mut tiles = vec![[[0.0f32; NR]; NARROW_MR]; blocks * c.div_ceil(cols)];
        let first = (wp + 1) * c;
        let flops = (2 * k * c * pixels) as f64;
        let wgrad = rate_cpu(flops, || {
            for n0 in (0..batch).step_by(group) {
                let grid = Grid {
                    images: group.min(batch - n0),
                    rows: side,
                    cols: side,
                    a_image: image,
                    a_row: wp * c,
                    a_col: c,
                    b_image: image,
                    b_row: wp * c,
                    b_col: c,
                };
                let start = if n0 == 0 { Start::Zero } else { Start::Tile };
                for (b, per_block) in tiles.chunks_mut(c.div_ceil(cols)).enumerate() {
                    let a_rows: [usize; NARROW_MR] = std::array::from_fn(|i| {
                        offsets[(b * tile_rows + i).min(k - 1)] + n0 * image
                    });
                    let b0 = n0 * image + first;
                    assert!(check_sum_outer(&xp, &a_rows, &dyp, b0 + c, grid));
                    // SAFETY: the reads were checked just above; `paths` holds what the CPU
                    // runs.
                    unsafe {
                        if narrow {
                            sum_outer_on::<NARROW_MR, NARROW_NR>(
                                path,
                                &mut per_block[0],
                                start,
                                &xp,
                                &a_rows,
                                &dyp,
                                b0,
                                grid,
                            );
                        } else {
                            let a_rows: &[usize; MR] = a_rows[..MR].try_into().expect("MR");
                            for (j, tile) in per_block.iter_mut().enumerate() {
                                let wide: &mut Tile = (&mut tile[..MR]).try_into().expect("MR");
                                sum_outer_on::<MR, NR>(
                                    path,
                                    wide,
                                    start,
                                    &xp,
                                    a_rows,
                                    &dyp,
                                    b0 + j * NR,
                                    grid,
                                );
                            }
                        }
                    }
                }
                std::hint::black_box(&mut tiles);
            }
        });
        // The wide weight gradient as AVX2 runs it in the layer: each group's `dy` copied into
        // slices of 16 channels (the copy timed too), one half-tile pass per slice.
        let mut slices = vec![0.0f32; group * side * side * c];
        if path != Simd::Avx2 || narrow {
            return [fwd, wgrad, 0.0];
        }
        let sliced = rate_cpu(flops, || {
            for n0 in (0..batch).step_by(group) {
                let images = group.min(batch - n0);
                let slice = images * side * side * NARROW_NR;
                for (p, (n, y, x)) in (0..images)
                    .flat_map(|n| (0..side).flat_map(move |y| (0..side).map(move |x| (n, y, x))))
                    .enumerate()
                {
                    let pixel = &dyp[(n0 + n) * image + first + (y * wp + x) * c..][..c];
                    for (h, values) in pixel.chunks_exact(NARROW_NR).enumerate() {
                        slices[h * slice + p * NARROW_NR..][..NARROW_NR].copy_from_slice(values);
                    }
                }
                let grid = Grid {
                    images,
                    rows: side,
                    cols: side,
                    a_image: image,
                    a_row: wp * c,
                    a_col: c,
                    b_image: side * side * NARROW_NR,
                    b_row: side * NARROW_NR,
                    b_col: NARROW_NR,
                };
                let start = if n0 == 0 { Start::Zero } else { Start::Tile };
                for (b, per_block) in tiles.chunks_mut(c.div_ceil(cols)).enumerate() {
                    let a_rows: [usize; MR] = std::array::from_fn(|i| {
                        offsets[(b * tile_rows + i).min(k - 1)] + n0 * image
                    });
                    for h in 0..c / NARROW_NR {
                        let tile = &mut per_block[h / 2];
                        let half: &mut Tile = (&mut tile[..MR]).try_into().expect("MR");
                        assert!(check_sum_outer(
                            &xp,
                            &a_rows,
                            &slices,
                            h * slice + NARROW_NR,
                            grid
                        ));
                        // SAFETY: the reads were checked just above; `paths` holds what the
                        // CPU runs.
                        unsafe {
                            sum_outer_on::<MR, NARROW_NR>(
                                path,
                                half,
                                start,
                                &xp,
                                &a_rows,
                                &slices,
                                h * slice,
                                grid,
                            )
                        };
                    }
                }
                std::hint::black_box(&mut tiles);
            }
        });
        [fwd, wgrad, sliced]
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
