//! safetensors checkpoints: a generic, validating reader and an atomic writer.
//!
//! This layer knows nothing about FractalNet beyond the tensor names and shapes it is given
//! (see shared/SPEC.md, "Checkpoints (safetensors)"):
//! - [`read`] / [`read_bytes`] check the container completely (header length, UTF-8, JSON,
//!   one entry per tensor with dtype F32, a shape whose size matches its `data_offsets`,
//!   offsets that tile the data section exactly, a string-to-string `__metadata__`, finite
//!   values) and only then decode the values (little endian on every host). No input panics,
//!   and memory use is bounded by a small multiple of the input's size.
//! - [`validate`] checks a [`RawCheckpoint`] against the tensors a model expects.
//! - [`metadata_json`] reads a JSON object stored as a metadata value.
//! - [`write_atomic`] writes through a temporary file in the same directory, fsyncs it and
//!   renames it over the target, so a crash leaves the old file or the new one, never a torn
//!   one.
//!
//! Every error is one line that names the file, the tensor or field at fault, and what was
//! expected versus found. Names that come from the file are escaped (`escape_debug`) and cut
//! to a bounded length before they appear in a message.

mod header;
mod read;
mod validate;
mod write;

use crate::error::{Error, Result};
use crate::tensor::Shape;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use header::MAX_RANK;
pub use read::{read, read_bytes};
pub use validate::{TensorSpec, metadata_json, validate};
pub use write::{to_bytes, write_atomic};

/// The largest header (the JSON part) accepted or written, in bytes. The same limit as the
/// `safetensors` crate's, so anything that crate writes can be read back.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The safetensors key under which the string-to-string metadata map is stored.
pub const METADATA_KEY: &str = "__metadata__";

/// A checkpoint as read from disk, fully validated at the container level.
#[derive(Debug, Clone, PartialEq)]
pub struct RawCheckpoint {
    /// The file it was read from (used in error messages).
    pub path: PathBuf,
    /// The `__metadata__` map (empty if the file has none).
    pub metadata: BTreeMap<String, String>,
    /// Every tensor: its shape and its values, row-major. All values are finite.
    pub tensors: BTreeMap<String, (Shape, Vec<f32>)>,
}

impl RawCheckpoint {
    /// The tensor `name`, or an error naming the file and the tensor.
    pub fn tensor(&self, name: &str) -> Result<(&Shape, &[f32])> {
        match self.tensors.get(name) {
            Some((shape, values)) => Ok((shape, values)),
            None => Err(tensor_error(&self.path, name, "missing")),
        }
    }
}

/// At most this many characters of a name taken from a file appear in an error message.
const MAX_NAME_CHARS: usize = 200;

/// `s` made safe for a one-line message: control and other non-printable characters
/// escaped, quotes and backslashes escaped, cut to [`MAX_NAME_CHARS`] characters.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_NAME_CHARS {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// A shape for a message, cut after 8 dimensions.
pub(crate) fn fmt_dims(dims: &[usize]) -> String {
    const MAX_DIMS: usize = 8;
    if dims.len() <= MAX_DIMS {
        return Shape::new(dims).to_string();
    }
    let head: Vec<String> = dims[..MAX_DIMS].iter().map(|d| d.to_string()).collect();
    format!("[{}, ... (rank {})]", head.join(", "), dims.len())
}

pub(crate) fn tensor_error(path: &std::path::Path, tensor: &str, what: impl Into<String>) -> Error {
    Error::Tensor {
        path: path.to_path_buf(),
        tensor: esc(tensor),
        what: what.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_is_one_line_and_bounded() {
        assert_eq!(
            esc("block0.col1.layer0.conv.weight"),
            "block0.col1.layer0.conv.weight"
        );
        assert_eq!(esc("a\nb\u{2028}"), "a\\nb\\u{2028}");
        let long = "x".repeat(1000);
        assert_eq!(esc(&long).chars().count(), MAX_NAME_CHARS + 3);
    }

    #[test]
    fn fmt_dims_cuts_long_shapes() {
        assert_eq!(fmt_dims(&[16, 3, 3, 3]), "[16, 3, 3, 3]");
        assert_eq!(fmt_dims(&[]), "[]");
        assert_eq!(
            fmt_dims(&[1; 20]),
            "[1, 1, 1, 1, 1, 1, 1, 1, ... (rank 20)]"
        );
    }
}
