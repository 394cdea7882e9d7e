//! CIFAR-10 and CIFAR-100 binary versions.
//!
//! CIFAR-10: records of 1 label byte (< 10) + 3072 pixel bytes (1024 R, 1024 G, 1024 B, each
//! plane rows top to bottom). CIFAR-100: records of the coarse label (< 20), the fine label
//! (< 100), then the same 3072 pixel bytes. Both labels are checked whichever set is used. A
//! file must hold a positive whole number of records.

use std::path::Path;

use super::{Images, LabelKind, SIDE};
use crate::error::{Error, Result};

const PIXELS: usize = 3 * SIDE * SIDE;

/// Splits `bytes` into records of `label_bytes + 3072`, checking the size.
fn records<'a>(
    path: &Path,
    bytes: &'a [u8],
    label_bytes: usize,
) -> Result<std::slice::ChunksExact<'a, u8>> {
    let rec = label_bytes + PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        return Err(Error::format(
            path,
            format!(
                "size {} is not a positive multiple of the {rec}-byte record ({} label byte{} + {PIXELS} pixels): truncated or not this format",
                bytes.len(),
                label_bytes,
                if label_bytes == 1 { "" } else { "s" }
            ),
        ));
    }
    Ok(bytes.chunks_exact(rec))
}

fn label_error(path: &Path, record: usize, what: &str, label: u8, classes: usize) -> Error {
    Error::format(
        path,
        format!("record {record}: {what}label {label} out of range (classes {classes})"),
    )
}

pub(super) fn parse_cifar10(path: &Path, bytes: &[u8]) -> Result<Images> {
    let recs = records(path, bytes, 1)?;
    let n = recs.len();
    let mut out = Images::empty(3, SIDE, SIDE, 10);
    out.pixels.reserve_exact(n * PIXELS);
    out.labels.reserve_exact(n);
    for (i, r) in recs.enumerate() {
        if r[0] >= 10 {
            return Err(label_error(path, i, "", r[0], 10));
        }
        out.labels.push(r[0] as u32);
        out.pixels.extend_from_slice(&r[1..]);
    }
    Ok(out)
}

pub(super) fn parse_cifar100(path: &Path, bytes: &[u8], label: LabelKind) -> Result<Images> {
    let recs = records(path, bytes, 2)?;
    let n = recs.len();
    let classes = match label {
        LabelKind::Fine => 100,
        LabelKind::Coarse => 20,
    };
    let mut out = Images::empty(3, SIDE, SIDE, classes);
    out.pixels.reserve_exact(n * PIXELS);
    out.labels.reserve_exact(n);
    for (i, r) in recs.enumerate() {
        let (coarse, fine) = (r[0], r[1]);
        if coarse >= 20 {
            return Err(label_error(path, i, "coarse ", coarse, 20));
        }
        if fine >= 100 {
            return Err(label_error(path, i, "fine ", fine, 100));
        }
        out.labels.push(match label {
            LabelKind::Fine => fine as u32,
            LabelKind::Coarse => coarse as u32,
        });
        out.pixels.extend_from_slice(&r[2..]);
    }
    Ok(out)
}
