//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.
//!
//! A file is gzip when it starts with the bytes `1f 8b`, whatever its name. After
//! decompression: images have the big-endian header `2051, N, 28, 28` (u32 each) followed by
//! exactly `N * 784` pixel bytes (row-major); labels have `2049, N` followed by exactly `N`
//! label bytes, each `< classes`. The two counts must agree. Each 28x28 image is zero-padded
//! by 2 pixels on every side to 32x32, one channel.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Images, SIDE};
use crate::error::{Error, Result};

pub const IMAGES_MAGIC: u32 = 2051;
pub const LABELS_MAGIC: u32 = 2049;
const ROWS: usize = 28;
const PAD: usize = (SIDE - ROWS) / 2;

/// `dir/name` if it exists, else `dir/name.gz` if that exists.
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// The file's bytes, gunzipped when it starts with the gzip magic `1f 8b`.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = super::read_file(path, || Error::format(path, "missing"))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("bad gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks the magic and returns the header's dimensions (`ndim` u32 after the magic).
fn header(path: &Path, b: &[u8], magic: u32, ndim: usize, what: &str) -> Result<Vec<usize>> {
    let head = 4 + 4 * ndim;
    if b.len() < 4 {
        return Err(Error::format(
            path,
            format!("truncated: {} bytes, shorter than the IDX magic", b.len()),
        ));
    }
    let m = be_u32(b, 0);
    if m != magic {
        return Err(Error::format(
            path,
            format!(
                "wrong magic {m} (0x{m:08x}); an IDX {what} file starts with {magic} (0x{magic:08x})"
            ),
        ));
    }
    if b.len() < head {
        return Err(Error::format(
            path,
            format!(
                "truncated: {} bytes, shorter than the {head}-byte IDX {what} header",
                b.len()
            ),
        ));
    }
    Ok((0..ndim).map(|i| be_u32(b, 4 + 4 * i) as usize).collect())
}

/// Checks that the body after a `head`-byte header holds exactly `count * each` bytes.
fn check_size(
    path: &Path,
    len: usize,
    head: usize,
    count: usize,
    each: usize,
    what: &str,
) -> Result<()> {
    let need = (count as u128) * (each as u128) + head as u128;
    if (len as u128) < need {
        return Err(Error::format(
            path,
            format!(
                "truncated: the header announces {count} {what} ({need} bytes), the file has {len}"
            ),
        ));
    }
    if (len as u128) != need {
        return Err(Error::format(
            path,
            format!(
                "size {len} does not match the header's {count} {what} (expected {need} bytes)"
            ),
        ));
    }
    Ok(())
}

/// Parses an IDX image file (decompressed bytes) into N padded 32x32 images (labels empty).
pub fn parse_images(path: &Path, b: &[u8]) -> Result<(usize, Vec<u8>)> {
    let dims = header(path, b, IMAGES_MAGIC, 3, "image")?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows != ROWS || cols != ROWS {
        return Err(Error::format(
            path,
            format!("images are {rows}x{cols}; expected 28x28"),
        ));
    }
    check_size(path, b.len(), 16, n, ROWS * ROWS, "images")?;
    let mut pixels = vec![0u8; n * SIDE * SIDE];
    for (dst, src) in pixels
        .chunks_exact_mut(SIDE * SIDE)
        .zip(b[16..].chunks_exact(ROWS * ROWS))
    {
        for (r, row) in src.chunks_exact(ROWS).enumerate() {
            let at = (r + PAD) * SIDE + PAD;
            dst[at..at + ROWS].copy_from_slice(row);
        }
    }
    Ok((n, pixels))
}

/// Parses an IDX label file (decompressed bytes); every label must be `< classes`.
pub fn parse_labels(path: &Path, b: &[u8], classes: usize) -> Result<Vec<u32>> {
    let dims = header(path, b, LABELS_MAGIC, 1, "label")?;
    let n = dims[0];
    check_size(path, b.len(), 8, n, 1, "labels")?;
    b[8..]
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if (l as usize) < classes {
                Ok(l as u32)
            } else {
                Err(Error::format(
                    path,
                    format!("record {i}: label {l} out of range (classes {classes})"),
                ))
            }
        })
        .collect()
}

/// Loads an image file and its label file (each raw or gzip) into one padded set.
pub fn load_pair(images_path: &Path, labels_path: &Path, classes: usize) -> Result<Images> {
    let (n, pixels) = parse_images(images_path, &read_maybe_gz(images_path)?)?;
    let labels = parse_labels(labels_path, &read_maybe_gz(labels_path)?, classes)?;
    if labels.len() != n {
        return Err(Error::format(
            labels_path,
            format!(
                "{} labels but {} has {n} images",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Ok(Images {
        channels: 1,
        height: SIDE,
        width: SIDE,
        pixels,
        labels,
        classes,
    })
}
