//! MATLAB level-5 MAT files (the format of SVHN's `*_32x32.mat`), read as a stream.
//!
//! Layout: a 128-byte header (text starting "MATLAB", subsystem offset, version 0x0100 at
//! byte 124, endian indicator "IM" at byte 126 for little-endian; "MI", a big-endian file, is
//! rejected, as is version 0x0200, the HDF5-based v7.3), then data elements. An element has a
//! tag (u32 type, u32 byte count) or, when the upper 16 bits of the first word are nonzero, the
//! small form (u16 count in the upper half, u16 type in the lower, up to 4 data bytes in the
//! second word). Elements are padded to 8 bytes; an `miCOMPRESSED` (15) element is a zlib
//! stream of one inner element and is not padded.
//!
//! A variable is an `miMATRIX` (14) element holding, in order: array flags (`miUINT32`, class
//! in the low byte, complex flag 0x0800), dimensions (`miINT32`), name (`miINT8`) and the real
//! part, whose data type may differ from the class (MATLAB stores a double array of small
//! integers as `miUINT8`, for instance). Only numeric, real, non-sparse arrays are read.
//!
//! SVHN: `X` is uint8 with dims 32x32x3xN (32x32x3 when N = 1), column-major: X(row, col, ch,
//! n) at `row + 32 col + 1024 ch + 3072 n`; `y` has dims Nx1 (or 1xN), any numeric type, each
//! value an integer in 0..=10 where 10 means digit 0 (label 0).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use rayon::prelude::*;

use super::{Images, SIDE};
use crate::error::{Error, Result};

pub const MI_INT8: u32 = 1;
pub const MI_UINT8: u32 = 2;
pub const MI_INT16: u32 = 3;
pub const MI_UINT16: u32 = 4;
pub const MI_INT32: u32 = 5;
pub const MI_UINT32: u32 = 6;
pub const MI_SINGLE: u32 = 7;
pub const MI_DOUBLE: u32 = 9;
pub const MI_INT64: u32 = 12;
pub const MI_UINT64: u32 = 13;
pub const MI_MATRIX: u32 = 14;
pub const MI_COMPRESSED: u32 = 15;

pub const MX_DOUBLE_CLASS: u8 = 6;
pub const MX_UINT8_CLASS: u8 = 9;

/// One numeric variable: the real part's raw little-endian bytes, in `data_type`.
#[derive(Clone, Debug)]
pub struct MatArray {
    pub name: String,
    /// mxClass (6 double, 7 single, 8 int8, 9 uint8, ... 15 uint64).
    pub class: u8,
    pub dims: Vec<usize>,
    /// miType of `data` (may differ from the class).
    pub data_type: u32,
    pub data: Vec<u8>,
}

fn class_name(c: u8) -> &'static str {
    match c {
        1 => "cell",
        2 => "struct",
        3 => "object",
        4 => "char",
        5 => "sparse",
        6 => "double",
        7 => "single",
        8 => "int8",
        9 => "uint8",
        10 => "int16",
        11 => "uint16",
        12 => "int32",
        13 => "uint32",
        14 => "int64",
        15 => "uint64",
        _ => "unknown",
    }
}

fn elem_size(t: u32) -> Option<usize> {
    match t {
        MI_INT8 | MI_UINT8 => Some(1),
        MI_INT16 | MI_UINT16 => Some(2),
        MI_INT32 | MI_UINT32 | MI_SINGLE => Some(4),
        MI_DOUBLE | MI_INT64 | MI_UINT64 => Some(8),
        _ => None,
    }
}

/// Value `i` of little-endian data of type `t` (`t` has a size, `i` in range).
fn value_at(t: u32, b: &[u8], i: usize) -> f64 {
    let s = |n: usize| &b[i * n..(i + 1) * n];
    match t {
        MI_INT8 => b[i] as i8 as f64,
        MI_UINT8 => b[i] as f64,
        MI_INT16 => i16::from_le_bytes([s(2)[0], s(2)[1]]) as f64,
        MI_UINT16 => u16::from_le_bytes([s(2)[0], s(2)[1]]) as f64,
        MI_INT32 => i32::from_le_bytes(s(4).try_into().unwrap_or([0; 4])) as f64,
        MI_UINT32 => u32::from_le_bytes(s(4).try_into().unwrap_or([0; 4])) as f64,
        MI_SINGLE => f32::from_le_bytes(s(4).try_into().unwrap_or([0; 4])) as f64,
        MI_DOUBLE => f64::from_le_bytes(s(8).try_into().unwrap_or([0; 8])),
        MI_INT64 => i64::from_le_bytes(s(8).try_into().unwrap_or([0; 8])) as f64,
        MI_UINT64 => u64::from_le_bytes(s(8).try_into().unwrap_or([0; 8])) as f64,
        _ => f64::NAN,
    }
}

impl MatArray {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The values as f64.
    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.numel())
            .map(|i| value_at(self.data_type, &self.data, i))
            .collect()
    }

    /// The values as u8 (moved when stored as miUINT8); any other type must hold integers
    /// in 0..=255.
    pub fn into_u8(self, path: &Path) -> Result<Vec<u8>> {
        if self.data_type == MI_UINT8 {
            return Ok(self.data);
        }
        (0..self.numel())
            .map(|i| {
                let v = value_at(self.data_type, &self.data, i);
                if v.fract() == 0.0 && (0.0..=255.0).contains(&v) {
                    Ok(v as u8)
                } else {
                    Err(Error::format(
                        path,
                        format!("variable {}: value {v} at {i} is not a uint8", self.name),
                    ))
                }
            })
            .collect()
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Where in the file an element is, for messages.
struct Ctx<'a> {
    path: &'a Path,
    at: u64,
    compressed: bool,
}

impl Ctx<'_> {
    fn err(&self, what: impl std::fmt::Display) -> Error {
        let kind = if self.compressed {
            "compressed element"
        } else {
            "element"
        };
        Error::format(self.path, format!("{kind} at byte {}: {what}", self.at))
    }
    fn io(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.err("truncated")
        } else {
            self.err(format!("unreadable ({e})"))
        }
    }
}

/// Reads one sub-element of a matrix, charging its bytes (tag, data, padding) to `budget`.
/// `trusted`: the budget was checked against the file length, so it may be reserved at once.
fn read_sub<R: Read>(
    r: &mut R,
    budget: &mut u64,
    trusted: bool,
    ctx: &Ctx,
    what: &str,
) -> Result<(u32, Vec<u8>)> {
    if *budget < 8 {
        return Err(ctx.err(format!("matrix ends before its {what}")));
    }
    let mut tag = [0u8; 8];
    r.read_exact(&mut tag).map_err(|e| ctx.io(e))?;
    *budget -= 8;
    let w0 = le32(&tag);
    if w0 >> 16 != 0 {
        let n = (w0 >> 16) as usize;
        if n > 4 {
            return Err(ctx.err(format!("{what}: small element of {n} bytes (at most 4)")));
        }
        return Ok((w0 & 0xffff, tag[4..4 + n].to_vec()));
    }
    let n = le32(&tag[4..]) as u64;
    if n > *budget {
        return Err(ctx.err(format!(
            "{what}: {n} bytes announced, only {} left in its matrix",
            *budget
        )));
    }
    let cap = if trusted { n } else { n.min(1 << 24) };
    let mut data = Vec::with_capacity(cap as usize);
    r.by_ref()
        .take(n)
        .read_to_end(&mut data)
        .map_err(|e| ctx.io(e))?;
    if (data.len() as u64) < n {
        return Err(ctx.err(format!("truncated in {what}")));
    }
    *budget -= n;
    // Padding to 8 bytes (tolerated missing at the very end of the matrix).
    let pad = ((8 - n % 8) % 8).min(*budget);
    let mut skip = [0u8; 8];
    r.read_exact(&mut skip[..pad as usize])
        .map_err(|e| ctx.io(e))?;
    *budget -= pad;
    Ok((le32(&tag), data))
}

/// Parses the body of an miMATRIX of `n` bytes. Returns `None` when `wanted(name)` is false
/// (the data is then not read).
fn read_matrix<R: Read>(
    r: &mut R,
    n: u64,
    trusted: bool,
    ctx: &Ctx,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Option<MatArray>> {
    let mut budget = n;
    let (t, flags) = read_sub(r, &mut budget, trusted, ctx, "array flags")?;
    if t != MI_UINT32 || flags.len() < 4 {
        return Err(ctx.err(format!(
            "array flags have type {t} and {} bytes (expected miUINT32, 8 bytes)",
            flags.len()
        )));
    }
    let f = le32(&flags);
    let class = (f & 0xff) as u8;
    let complex = f & 0x0800 != 0;
    let (t, dims_b) = read_sub(r, &mut budget, trusted, ctx, "dimensions")?;
    if t != MI_INT32 || !dims_b.len().is_multiple_of(4) || dims_b.len() < 8 {
        return Err(ctx.err(format!(
            "dimensions have type {t} and {} bytes (expected at least two miINT32)",
            dims_b.len()
        )));
    }
    let mut dims = Vec::with_capacity(dims_b.len() / 4);
    for d in dims_b.chunks_exact(4) {
        let v = le32(d) as i32;
        if v < 0 {
            return Err(ctx.err(format!("negative dimension {v}")));
        }
        dims.push(v as usize);
    }
    let (t, name_b) = read_sub(r, &mut budget, trusted, ctx, "array name")?;
    if t != MI_INT8 && t != MI_UINT8 {
        return Err(ctx.err(format!("array name has type {t} (expected miINT8)")));
    }
    let name = String::from_utf8_lossy(&name_b).into_owned();
    if !wanted(&name) {
        return Ok(None);
    }
    let ctx_var = |what: String| ctx.err(format!("variable {name}: {what}"));
    if !(6..=15).contains(&class) {
        return Err(ctx_var(format!(
            "is a {} array (class {class}); expected a numeric array",
            class_name(class)
        )));
    }
    if complex {
        return Err(ctx_var("is complex; expected a real array".into()));
    }
    let numel = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(|| ctx_var(format!("dimensions {dims:?} overflow")))?;
    let (t, data) = read_sub(r, &mut budget, trusted, ctx, "real part")?;
    let size = elem_size(t).ok_or_else(|| ctx_var(format!("real part has data type {t}")))?;
    if data.len() as u64 != numel.saturating_mul(size as u64) {
        return Err(ctx_var(format!(
            "real part holds {} bytes; dims {dims:?} of {size}-byte values need {}",
            data.len(),
            numel.saturating_mul(size as u64)
        )));
    }
    if budget != 0 {
        return Err(ctx_var(format!(
            "the matrix announces {n} bytes but its parts end after {} (an imaginary part, or a wrong size)",
            n - budget
        )));
    }
    Ok(Some(MatArray {
        name,
        class,
        dims,
        data_type: t,
        data,
    }))
}

/// Reads the header, returning the file length.
fn check_header(path: &Path, f: &mut File) -> Result<u64> {
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut h = [0u8; 128];
    if len < 128 {
        return Err(Error::format(
            path,
            format!("truncated: {len} bytes, shorter than the 128-byte MAT header"),
        ));
    }
    f.read_exact(&mut h).map_err(|e| Error::io(path, e))?;
    if !h.starts_with(b"MATLAB") {
        return Err(Error::format(
            path,
            "wrong magic: not a MAT file (header text does not start with \"MATLAB\")",
        ));
    }
    match &h[126..128] {
        b"IM" => {}
        b"MI" => {
            return Err(Error::format(
                path,
                "big-endian MAT file (endian indicator \"MI\"); only little-endian (\"IM\") is supported",
            ));
        }
        other => {
            return Err(Error::format(
                path,
                format!("wrong magic: endian indicator {other:?} is neither \"IM\" nor \"MI\""),
            ));
        }
    }
    let version = u16::from_le_bytes([h[124], h[125]]);
    if version == 0x0200 {
        return Err(Error::format(
            path,
            "MAT v7.3 (HDF5) file; only level-5 MAT files (v5/v6/v7) are supported",
        ));
    }
    if version != 0x0100 {
        return Err(Error::format(
            path,
            format!("unknown MAT version 0x{version:04x} (expected 0x0100)"),
        ));
    }
    Ok(len)
}

/// Reads the variables of `path` whose names are in `names` (each at most once, first wins).
/// Stops as soon as all were found; other variables are skipped without being decoded.
pub fn read_arrays(path: &Path, names: &[&str]) -> Result<Vec<MatArray>> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::format(path, "missing")
        } else {
            Error::io(path, e)
        }
    })?;
    let mut f = file;
    let len = check_header(path, &mut f)?;
    let mut found: Vec<MatArray> = Vec::new();
    let mut pos = 128u64;
    while pos < len && found.len() < names.len() {
        let ctx = Ctx {
            path,
            at: pos,
            compressed: false,
        };
        if len - pos < 8 {
            return Err(ctx.err(format!(
                "truncated: {} bytes left, less than a tag",
                len - pos
            )));
        }
        f.seek(SeekFrom::Start(pos))
            .map_err(|e| Error::io(path, e))?;
        let mut tag = [0u8; 8];
        f.read_exact(&mut tag).map_err(|e| ctx.io(e))?;
        let w0 = le32(&tag);
        let (t, n) = if w0 >> 16 != 0 {
            (w0 & 0xffff, 0u64) // a small element: 8 bytes in all
        } else {
            (w0, le32(&tag[4..]) as u64)
        };
        let end = pos + 8 + n;
        if end > len {
            return Err(ctx.err(format!(
                "truncated: type {t} of {n} bytes runs past the end of the file ({len} bytes)"
            )));
        }
        let taken: Vec<&str> = found.iter().map(|a| a.name.as_str()).collect();
        let wanted = |s: &str| names.contains(&s) && !taken.contains(&s);
        match t {
            MI_MATRIX => {
                let mut r = BufReader::new((&mut f).take(n));
                if let Some(a) = read_matrix(&mut r, n, true, &ctx, &wanted)? {
                    found.push(a);
                }
            }
            MI_COMPRESSED => {
                let ctx = Ctx {
                    compressed: true,
                    ..ctx
                };
                let mut z = flate2::read::ZlibDecoder::new(BufReader::new((&mut f).take(n)));
                let mut inner = [0u8; 8];
                z.read_exact(&mut inner).map_err(|e| ctx.io(e))?;
                let it = le32(&inner);
                if it == MI_MATRIX {
                    let inner_n = le32(&inner[4..]) as u64;
                    if let Some(a) = read_matrix(&mut z, inner_n, false, &ctx, &wanted)? {
                        found.push(a);
                    }
                }
            }
            _ => {}
        }
        pos = if t == MI_COMPRESSED {
            end
        } else {
            end.next_multiple_of(8)
        };
    }
    Ok(found)
}

/// Loads an SVHN cropped-digits file: `X` (uint8 32x32x3xN) and `y` (N labels, 10 -> 0).
pub fn load_svhn(path: &Path) -> Result<Images> {
    let arrays = read_arrays(path, &["X", "y"])?;
    let mut x = None;
    let mut y = None;
    for a in arrays {
        if a.name == "X" {
            x = Some(a);
        } else {
            y = Some(a);
        }
    }
    let x =
        x.ok_or_else(|| Error::format(path, "no variable 'X' (the images, uint8 32x32x3xN)"))?;
    let y = y.ok_or_else(|| Error::format(path, "no variable 'y' (the labels, Nx1)"))?;
    if x.class != MX_UINT8_CLASS {
        return Err(Error::format(
            path,
            format!(
                "variable X is {} (class {}); expected uint8",
                class_name(x.class),
                x.class
            ),
        ));
    }
    let n = match x.dims[..] {
        [SIDE, SIDE, 3] => 1,
        [SIDE, SIDE, 3, n] => n,
        _ => {
            return Err(Error::format(
                path,
                format!("variable X has dims {:?}; expected 32x32x3xN", x.dims),
            ));
        }
    };
    let ny = match y.dims[..] {
        [a, 1] | [1, a] => a,
        _ => {
            return Err(Error::format(
                path,
                format!("variable y has dims {:?}; expected Nx1", y.dims),
            ));
        }
    };
    if ny != n {
        return Err(Error::format(
            path,
            format!("variable y has {ny} labels but X has {n} images"),
        ));
    }
    let labels = y
        .to_f64()
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            if v.fract() == 0.0 && (0.0..=10.0).contains(&v) {
                Ok(if v == 10.0 { 0 } else { v as u32 })
            } else {
                Err(Error::format(
                    path,
                    format!("variable y, record {i}: label {v} out of range (1..=10, 10 meaning digit 0)"),
                ))
            }
        })
        .collect::<Result<Vec<u32>>>()?;
    let src = x.into_u8(path)?;
    let plane = SIDE * SIDE;
    // X(row, col, ch, n) sits at row + 32 col + 1024 (3 n + ch): each plane is transposed.
    let mut pixels = vec![0u8; src.len()];
    pixels
        .par_chunks_mut(plane)
        .zip(src.par_chunks(plane))
        .for_each(|(dst, s)| {
            for row in 0..SIDE {
                for col in 0..SIDE {
                    dst[row * SIDE + col] = s[row + SIDE * col];
                }
            }
        });
    Ok(Images {
        channels: 3,
        height: SIDE,
        width: SIDE,
        pixels,
        labels,
        classes: 10,
    })
}
