//! The one place the runtime multiplies matrices. Everything goes through [`matmul`], a bounds-checked
//! safe front for the `gemm` crate, always single-threaded: the runtime parallelises one level up
//! (over fixed row lanes), so a second level of threads here would only fight for the two cores
//! and make results depend on the thread count.

/// A read-only strided matrix over a slice: element `(i, j)` is `data[i * row_stride + j *
/// col_stride]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A writable strided matrix over a slice, laid out like [`MatRef`].
#[derive(Debug)]
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix at the start of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

impl<'a> MatMut<'a> {
    /// A row-major `rows x cols` matrix at the start of `data`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
}

/// Whether every element of a `rows x cols` matrix with these strides lies inside `len` values.
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1).checked_mul(row_stride).and_then(|r| {
        (cols - 1)
            .checked_mul(col_stride)
            .and_then(|c| r.checked_add(c))
    });
    matches!(last, Some(last) if last < len && last <= isize::MAX as usize)
}

/// `dst = lhs * rhs`, or `dst += lhs * rhs` when `accumulate` is set.
///
/// Panics if the shapes do not chain or a view runs past its slice: callers size every buffer
/// from validated layer shapes, so a failure here is a bug in the runtime, not bad user input.
pub(crate) fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "matmul shapes do not chain: {m}x{n} = {}x{} * {}x{}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    assert!(
        fits(dst.data.len(), m, n, dst.row_stride, dst.col_stride),
        "matmul dst out of bounds"
    );
    assert!(
        fits(lhs.data.len(), m, k, lhs.row_stride, lhs.col_stride),
        "matmul lhs out of bounds"
    );
    assert!(
        fits(rhs.data.len(), k, n, rhs.row_stride, rhs.col_stride),
        "matmul rhs out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.row_stride + j * dst.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: the asserts above prove every element the kernel reads or writes lies inside its
    // slice, and strides fit in `isize`. `dst` is borrowed mutably, so it cannot alias `lhs`/`rhs`.
    // With `read_dst == false` gemm never reads `dst`, so its previous contents do not matter.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.col_stride as isize,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_plain_transposed_and_accumulated() {
        let (m, k, n) = (37, 75, 19);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![f32::NAN; m * n];
        matmul(
            MatMut::row_major(&mut c, m, n),
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            false,
        );
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // c^T = b^T a^T, accumulated onto ones.
        let mut ct = vec![1.0; m * n];
        matmul(
            MatMut::row_major(&mut ct, n, m),
            MatRef::row_major(&b, k, n).t(),
            MatRef::row_major(&a, m, k).t(),
            true,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((ct[j * m + i] - 1.0 - want[i * n + j]).abs() < 1e-4);
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn rejects_views_past_the_slice() {
        let a = vec![0.0; 5];
        let mut c = vec![0.0; 4];
        matmul(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&a, 3, 2),
            false,
        );
    }
}
