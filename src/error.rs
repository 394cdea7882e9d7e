//! The library's error type. Every variant names what is at fault (file, tensor, shape or flag),
//! so that the binaries can print it as one line and exit non-zero.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that cannot describe a network or a run.
    #[error("invalid config: {what}")]
    Config { what: String },

    /// Two tensors (or a tensor and an op's rules) disagree on shape.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    /// A keep-mask that does not fit the plan, or leaves a live join without inputs.
    #[error("invalid keep-mask: {what}")]
    Mask { what: String },

    /// An I/O failure on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file whose contents do not have the documented format.
    #[error("{}: {what}", path.display())]
    Format { path: PathBuf, what: String },

    /// A checkpoint that fails validation; names the tensor at fault.
    #[error("{}: tensor {tensor}: {what}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        what: String,
    },

    /// A backend that cannot run (no device, out of memory, driver error).
    #[error("backend {backend}: {what}")]
    Backend { backend: String, what: String },

    /// Training diverged (NaN or infinite loss).
    #[error("training diverged: {what}")]
    Diverged { what: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn config(what: impl Into<String>) -> Self {
        Error::Config { what: what.into() }
    }
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
    pub fn mask(what: impl Into<String>) -> Self {
        Error::Mask { what: what.into() }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            what: what.into(),
        }
    }
}
