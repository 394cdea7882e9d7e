/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rm(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major `rows x cols` matrix (a `cols x rows` view).
    pub fn rm_t(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows: cols,
            cols: rows,
            rs: 1,
            cs: cols as isize,
        }
    }
    fn span_ok(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows as isize - 1) * self.rs + (self.cols as isize - 1) * self.cs;
        last >= 0 && (last as usize) < self.data.len()
    }
}

/// c (row-major `m x n`, leading dimension n) = alpha * a b + beta * c.
///
/// Panics only on a caller bug (dimension or span mismatch), never on user data: every op
/// validates shapes before it reaches here.
pub fn sgemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "sgemm inner dimensions");
    assert!(
        a.span_ok() && b.span_ok() && c.len() >= m * n,
        "sgemm spans"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for v in &mut c[..m * n] {
            *v *= beta;
        }
        return;
    }
    // SAFETY: the spans of a, b and c were checked above to lie inside their slices, and c
    // does not alias a or b (it is a unique borrow).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs,
            a.cs,
            b.data.as_ptr(),
            b.rs,
            b.cs,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}
