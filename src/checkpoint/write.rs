//! Writing: a deterministic safetensors layout, written atomically.
//!
//! Layout (the same bytes as `safetensors::serialize` for F32 tensors and at most one
//! metadata key; with more keys that function's order follows a `HashMap` and varies from run
//! to run, ours is sorted): `__metadata__` first (omitted when empty, keys sorted), then the
//! tensors sorted by name, their data contiguous in the same order from offset 0; the header
//! padded with spaces to a multiple of 8 bytes.

use super::{MAX_HEADER_BYTES, METADATA_KEY, tensor_error};
use crate::error::{Error, Result};
use crate::tensor::Shape;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

type TensorRef<'a> = (String, Shape, &'a [f32]);

/// Check the tensors and build the padded header; the tensors come back in file order.
fn prepare<'t, 'a>(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    tensors: &'t [TensorRef<'a>],
) -> Result<(Vec<u8>, Vec<&'t TensorRef<'a>>)> {
    let mut seen = HashSet::with_capacity(tensors.len());
    for (name, shape, values) in tensors {
        if name == METADATA_KEY {
            return Err(tensor_error(
                path,
                name,
                format!("{METADATA_KEY} is reserved for the metadata map"),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(tensor_error(path, name, "given twice"));
        }
        let numel = shape
            .dims()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if numel != Some(values.len()) {
            return Err(tensor_error(
                path,
                name,
                format!(
                    "shape {shape} does not hold the {} values given",
                    values.len()
                ),
            ));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(tensor_error(
                path,
                name,
                format!("refusing to write a non-finite value: {v} at index {i}"),
            ));
        }
    }
    let mut order: Vec<&TensorRef<'a>> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));

    let json_str = |s: &str| serde_json::to_string(s).expect("a string always serialises");
    let mut h = String::from("{");
    if !metadata.is_empty() {
        h.push_str(&json_str(METADATA_KEY));
        h.push_str(":{");
        for (i, (k, v)) in metadata.iter().enumerate() {
            if i > 0 {
                h.push(',');
            }
            h.push_str(&json_str(k));
            h.push(':');
            h.push_str(&json_str(v));
        }
        h.push('}');
    }
    let mut offset = 0usize;
    for (i, (name, shape, values)) in order.iter().enumerate() {
        if i > 0 || !metadata.is_empty() {
            h.push(',');
        }
        let end = offset + values.len() * 4;
        let dims: Vec<String> = shape.dims().iter().map(|d| d.to_string()).collect();
        h.push_str(&json_str(name));
        h.push_str(&format!(
            ":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            dims.join(",")
        ));
        offset = end;
    }
    h.push('}');
    let mut header = h.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() as u64 > MAX_HEADER_BYTES {
        return Err(Error::format(
            path,
            format!(
                "header would be {} bytes, above the limit of {MAX_HEADER_BYTES} bytes",
                header.len()
            ),
        ));
    }
    Ok((header, order))
}

fn write_body<W: Write>(w: &mut W, header: &[u8], order: &[&TensorRef<'_>]) -> std::io::Result<()> {
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(header)?;
    let mut buf = Vec::with_capacity(4 * 16384);
    for (_, _, values) in order {
        for chunk in values.chunks(16384) {
            buf.clear();
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
    }
    Ok(())
}

/// The bytes of a safetensors file holding `metadata` and `tensors` (the layout in the module
/// docs). `path` is used only in error messages. Fails on a duplicate name, a shape that does
/// not match the number of values, or a non-finite value (which [`super::read_bytes`] would
/// refuse).
pub fn to_bytes(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    tensors: &[(String, Shape, &[f32])],
) -> Result<Vec<u8>> {
    let (header, order) = prepare(path, metadata, tensors)?;
    let mut out = Vec::new();
    write_body(&mut out, &header, &order).map_err(|e| Error::io(path, e))?;
    Ok(out)
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Atomic write: serialise to `<path>.tmp-<pid>-<n>` in the same directory (`n` counts the
/// writes of this process, so two threads never share a temporary file), fsync the file,
/// rename it over `path`, fsync the directory. A crash at any moment leaves either the old
/// file or the new one, never a torn file (at worst a stale `.tmp-` file next to it). On an
/// error the temporary file is removed and `path` is untouched.
pub fn write_atomic(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    tensors: &[(String, Shape, &[f32])],
) -> Result<()> {
    let (header, order) = prepare(path, metadata, tensors)?;
    let Some(file_name) = path.file_name() else {
        return Err(Error::format(
            path,
            "cannot write a checkpoint here: the path does not name a file",
        ));
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);

    let result = (|| -> Result<()> {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write_body(&mut w, &header, &order).map_err(|e| Error::io(&tmp, e))?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir).map_err(|e| Error::io(&dir, e))
}

/// Make the rename durable: fsync the directory that holds the file (Unix only; elsewhere the
/// rename is as durable as the platform makes it).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_and_sorted() {
        let a = [1.0f32, 2.0];
        let b = [3.0f32];
        let tensors = vec![
            ("z".to_owned(), Shape::new([2]), &a[..]),
            ("a".to_owned(), Shape::new([1, 1]), &b[..]),
        ];
        let bytes = to_bytes(Path::new("t"), &BTreeMap::new(), &tensors).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap().trim_end();
        assert_eq!(
            header,
            r#"{"a":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        );
        assert_eq!(bytes.len(), 8 + n + 12);
    }
}
