//! Reading: validate every byte of the container before trusting any of it.

use super::header::{self, Entry, Header};
use super::{MAX_HEADER_BYTES, RawCheckpoint, esc, fmt_dims, tensor_error};
use crate::error::{Error, Result};
use crate::tensor::Shape;
use std::collections::BTreeMap;
use std::path::Path;

/// Read and validate the checkpoint at `path` (see [`read_bytes`]).
pub fn read(path: &Path) -> Result<RawCheckpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_bytes(path, &bytes)
}

/// Parse and validate a whole safetensors file held in memory. `path` is used only in error
/// messages. Never panics. The header is parsed by a streaming visitor that stops at the first
/// fault, so memory holds only what is valid so far (names, shapes of at most
/// [`super::MAX_RANK`] dimensions, metadata strings) plus the decoded values: a small multiple
/// of `bytes.len()` for any input.
pub fn read_bytes(path: &Path, bytes: &[u8]) -> Result<RawCheckpoint> {
    let format = |what: String| Error::format(path, what);

    // 1. The 8-byte header length.
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(format(format!(
            "file is {} bytes, too short for the 8-byte safetensors header length",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(format(format!(
            "header length {header_len} bytes is above the limit of {MAX_HEADER_BYTES} bytes"
        )));
    }
    if header_len > rest.len() as u64 {
        return Err(format(format!(
            "header length {header_len} bytes runs past the end of the file \
             ({} bytes follow the length field)",
            rest.len()
        )));
    }
    let (header, data) = rest.split_at(header_len as usize);

    // 2. The header: UTF-8, then a streaming parse that validates each entry on its own
    //    (dtype, shape, offsets inside the data section) and the metadata map.
    let text = std::str::from_utf8(header).map_err(|e| {
        format(format!(
            "header is not UTF-8 (invalid byte at header offset {})",
            e.valid_up_to()
        ))
    })?;
    let Header { metadata, entries } = header::parse(path, text, data.len())?;

    // 3. The offsets tile the data section exactly: no overlap, no hole, nothing after.
    let mut order: Vec<(&str, &Entry)> = entries.iter().map(|(n, e)| (n.as_str(), e)).collect();
    check_layout(path, &mut order, data.len())?;

    // 4. Cross-check with the `safetensors` crate (which must agree now that every check it
    //    makes has passed here) and take each tensor's bytes from its view.
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        format(format!(
            "rejected by the safetensors crate: {}",
            one_line(&e)
        ))
    })?;
    if st.len() != entries.len() {
        return Err(format(format!(
            "the safetensors crate sees {} tensors, the validator {}",
            st.len(),
            entries.len()
        )));
    }

    // 5. Decode (little endian on every host) and require finite values.
    let mut tensors = BTreeMap::new();
    for (name, e) in entries {
        let view = st.tensor(&name).map_err(|err| {
            tensor_error(
                path,
                &name,
                format!("safetensors crate: {}", one_line(&err)),
            )
        })?;
        let ours = &data[e.begin..e.end];
        if view.dtype() != safetensors::Dtype::F32
            || view.shape() != e.dims.as_slice()
            || view.data().as_ptr() != ours.as_ptr()
            || view.data().len() != ours.len()
        {
            return Err(tensor_error(
                path,
                &name,
                "the safetensors crate and the validator disagree on this tensor",
            ));
        }
        let values = decode_f32(view.data());
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            let what = if v.is_nan() {
                "NaN"
            } else if *v > 0.0 {
                "+Inf"
            } else {
                "-Inf"
            };
            return Err(tensor_error(
                path,
                &name,
                format!(
                    "contains {what} at index {i} (of {} values, shape {})",
                    values.len(),
                    fmt_dims(&e.dims)
                ),
            ));
        }
        tensors.insert(name, (Shape::new(e.dims), values));
    }

    Ok(RawCheckpoint {
        path: path.to_path_buf(),
        metadata,
        tensors,
    })
}

/// Little-endian f32s; `bytes.len()` is a multiple of 4 (checked by the caller).
fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// An error's Display with line breaks replaced, so that a message stays one line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace(['\n', '\r'], " ")
}

/// Sort `entries` by offset and require that they tile `0..data_len` exactly.
fn check_layout(path: &Path, entries: &mut [(&str, &Entry)], data_len: usize) -> Result<()> {
    entries.sort_by(|(an, a), (bn, b)| (a.begin, a.end, an).cmp(&(b.begin, b.end, bn)));
    let mut covered = 0usize; // end of the data tiled so far
    let mut last: Option<(&str, &Entry)> = None; // the entry that ends at `covered`
    for &(name, e) in entries.iter() {
        if e.begin < covered {
            // `covered > 0`, so some entry set it: `last` is that entry.
            let prev = last.map_or_else(String::new, |(pn, p)| {
                format!(" tensor {} at [{}, {}]", esc(pn), p.begin, p.end)
            });
            return Err(tensor_error(
                path,
                name,
                format!("data_offsets [{}, {}] overlap{prev}", e.begin, e.end),
            ));
        }
        if e.begin > covered {
            let after = match last {
                Some((pn, _)) => format!("after tensor {} (ends at {covered})", esc(pn)),
                None => "at the start of the data section".to_owned(),
            };
            return Err(tensor_error(
                path,
                name,
                format!(
                    "data_offsets [{}, {}] leave a hole of {} bytes {after}",
                    e.begin,
                    e.end,
                    e.begin - covered
                ),
            ));
        }
        covered = e.end;
        last = Some((name, e));
    }
    if covered != data_len {
        return Err(Error::format(
            path,
            format!(
                "data section is {data_len} bytes but the tensors cover only {covered}: \
                 {} unclaimed bytes at the end",
                data_len - covered
            ),
        ));
    }
    Ok(())
}
