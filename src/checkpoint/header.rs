//! The header parser: a typed, streaming serde visitor that validates while it parses.
//!
//! No generic JSON tree is built. Each value is visited by a "want" that knows what it expects
//! at that place (the header object, `__metadata__`, a tensor entry, a dtype, a shape, ...);
//! the first value that does not fit aborts the parse at once, with the precise error kept in
//! [`Ctx`] (serde only carries a placeholder). So memory stays proportional to what is valid
//! (names, shapes of at most [`MAX_RANK`] dimensions, metadata strings), and nesting is never
//! deeper than four levels whatever the input.

use super::{METADATA_KEY, esc, fmt_dims, tensor_error};
use crate::error::Error;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The most dimensions a tensor may have (safetensors sets no limit; no real tensor comes
/// close).
pub const MAX_RANK: usize = 64;

/// One tensor's header entry, checked on its own (shape size matches the offsets, which lie
/// inside the data section).
pub(super) struct Entry {
    pub dims: Vec<usize>,
    pub begin: usize,
    pub end: usize,
}

/// A parsed, entry-wise valid header.
pub(super) struct Header {
    pub metadata: BTreeMap<String, String>,
    pub entries: BTreeMap<String, Entry>,
}

/// What every want shares: the file (for messages), the data section's length, and the slot
/// for the first validation error.
pub(super) struct Ctx<'p> {
    path: &'p Path,
    data_len: usize,
    err: RefCell<Option<Error>>,
}

impl Ctx<'_> {
    /// Record `e` (the first one wins) and return serde's placeholder error.
    fn fail<E: de::Error>(&self, e: Error) -> E {
        let mut slot = self.err.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
        E::custom("rejected by the checkpoint validator")
    }
    fn format<E: de::Error>(&self, what: String) -> E {
        self.fail(Error::format(self.path, what))
    }
    fn tensor<E: de::Error>(&self, name: &str, what: String) -> E {
        self.fail(tensor_error(self.path, name, what))
    }
}

/// Parse `text` (the header) for a file whose data section is `data_len` bytes.
pub(super) fn parse(path: &Path, text: &str, data_len: usize) -> crate::error::Result<Header> {
    let ctx = Ctx {
        path,
        data_len,
        err: RefCell::new(None),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let result = V(HeaderWant { ctx: &ctx })
        .deserialize(&mut de)
        .and_then(|h| de.end().map(|()| h));
    match result {
        Ok(h) => Ok(h),
        Err(e) => Err(ctx.err.take().unwrap_or_else(|| {
            Error::format(
                path,
                format!(
                    "header is not valid JSON: {}",
                    e.to_string().replace(['\n', '\r'], " ")
                ),
            )
        })),
    }
}

/// What a place in the header accepts. Every method not overridden rejects its kind of value
/// through [`Want::wrong`], which names what was found.
trait Want<'de>: Sized {
    type Out;
    fn wrong<E: de::Error>(self, found: &str) -> E;
    fn null<E: de::Error>(self) -> Result<Self::Out, E> {
        Err(self.wrong("null"))
    }
    fn unsigned<E: de::Error>(self, v: u64) -> Result<Self::Out, E> {
        Err(self.wrong(&format!("the number {v}")))
    }
    fn string<E: de::Error>(self, _v: &str) -> Result<Self::Out, E> {
        Err(self.wrong("a JSON string"))
    }
    fn seq<A: SeqAccess<'de>>(self, _a: A) -> Result<Self::Out, A::Error> {
        Err(self.wrong("a JSON array"))
    }
    fn map<A: MapAccess<'de>>(self, _a: A) -> Result<Self::Out, A::Error> {
        Err(self.wrong("a JSON object"))
    }
}

/// Adapter: a [`Want`] as a serde seed and visitor.
struct V<W>(W);

impl<'de, W: Want<'de>> DeserializeSeed<'de> for V<W> {
    type Value = W::Out;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<W::Out, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, W: Want<'de>> Visitor<'de> for V<W> {
    type Value = W::Out;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a safetensors header value")
    }
    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<W::Out, E> {
        Err(self.0.wrong("a JSON boolean"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<W::Out, E> {
        self.0.unsigned(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<W::Out, E> {
        match u64::try_from(v) {
            Ok(u) => self.0.unsigned(u),
            Err(_) => Err(self.0.wrong(&format!("the number {v}"))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<W::Out, E> {
        Err(self.0.wrong(&format!("the number {v}")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<W::Out, E> {
        self.0.string(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<W::Out, E> {
        self.0.null()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<W::Out, A::Error> {
        self.0.seq(a)
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<W::Out, A::Error> {
        self.0.map(a)
    }
}

// ------------------------------------------------------------------------------ the header

struct HeaderWant<'c> {
    ctx: &'c Ctx<'c>,
}

impl<'de> Want<'de> for HeaderWant<'_> {
    type Out = Header;
    fn wrong<E: de::Error>(self, found: &str) -> E {
        self.ctx
            .format(format!("header is {found}, expected a JSON object"))
    }
    fn map<A: MapAccess<'de>>(self, mut a: A) -> Result<Header, A::Error> {
        let ctx = self.ctx;
        let mut metadata = None;
        let mut entries = BTreeMap::new();
        while let Some(name) = a.next_key::<String>()? {
            let twice = if name == METADATA_KEY {
                metadata.is_some()
            } else {
                entries.contains_key(&name)
            };
            if twice {
                return Err(ctx.format(format!("header names \"{}\" twice", esc(&name))));
            }
            if name == METADATA_KEY {
                metadata = Some(a.next_value_seed(V(MetaWant { ctx }))?);
            } else {
                let entry = a.next_value_seed(V(EntryWant { ctx, name: &name }))?;
                entries.insert(name, entry);
            }
        }
        Ok(Header {
            metadata: metadata.unwrap_or_default(),
            entries,
        })
    }
}

// ---------------------------------------------------------------------------- __metadata__

struct MetaWant<'c> {
    ctx: &'c Ctx<'c>,
}

impl<'de> Want<'de> for MetaWant<'_> {
    type Out = BTreeMap<String, String>;
    fn wrong<E: de::Error>(self, found: &str) -> E {
        self.ctx.format(format!(
            "{METADATA_KEY} is {found}, expected an object of strings"
        ))
    }
    /// Written by some tools for "no metadata"; the safetensors crate accepts it too.
    fn null<E: de::Error>(self) -> Result<Self::Out, E> {
        Ok(BTreeMap::new())
    }
    fn map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Out, A::Error> {
        let ctx = self.ctx;
        let mut out = BTreeMap::new();
        while let Some(key) = a.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(ctx.format(format!("{METADATA_KEY} names key \"{}\" twice", esc(&key))));
            }
            let value = a.next_value_seed(V(MetaValueWant { ctx, key: &key }))?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

struct MetaValueWant<'c, 'k> {
    ctx: &'c Ctx<'c>,
    key: &'k str,
}

impl<'de> Want<'de> for MetaValueWant<'_, '_> {
    type Out = String;
    fn wrong<E: de::Error>(self, found: &str) -> E {
        self.ctx.format(format!(
            "{METADATA_KEY} key \"{}\" is {found}, expected a string",
            esc(self.key)
        ))
    }
    fn string<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

// ---------------------------------------------------------------------------- tensor entries

struct EntryWant<'c, 'n> {
    ctx: &'c Ctx<'c>,
    name: &'n str,
}

impl<'de> Want<'de> for EntryWant<'_, '_> {
    type Out = Entry;
    fn wrong<E: de::Error>(self, found: &str) -> E {
        self.ctx.tensor(
            self.name,
            format!(
                "header entry is {found}, expected an object with dtype, shape and data_offsets"
            ),
        )
    }
    fn map<A: MapAccess<'de>>(self, mut a: A) -> Result<Entry, A::Error> {
        let (ctx, name) = (self.ctx, self.name);
        let err = |what: String| -> A::Error { ctx.tensor(name, what) };
        let (mut dtype, mut shape, mut offsets) = (false, None, None);
        while let Some(field) = a.next_key::<String>()? {
            let twice = match field.as_str() {
                "dtype" => std::mem::replace(&mut dtype, true),
                "shape" => shape.is_some(),
                "data_offsets" => offsets.is_some(),
                other => {
                    return Err(err(format!(
                        "unknown field \"{}\" in header entry (expected dtype, shape, \
                         data_offsets)",
                        esc(other)
                    )));
                }
            };
            if twice {
                return Err(err(format!("header entry names \"{field}\" twice")));
            }
            match field.as_str() {
                "dtype" => a.next_value_seed(V(DtypeWant { ctx, name }))?,
                "shape" => shape = Some(a.next_value_seed(V(DimsWant { ctx, name }))?),
                _ => offsets = Some(a.next_value_seed(V(OffsetsWant { ctx, name }))?),
            }
        }
        if !dtype {
            return Err(err("header entry has no dtype".into()));
        }
        let Some(dims) = shape else {
            return Err(err("header entry has no shape".into()));
        };
        let Some((begin, end)) = offsets else {
            return Err(err("header entry has no data_offsets".into()));
        };

        let nbytes = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(4));
        let Some(nbytes) = nbytes else {
            return Err(err(format!(
                "shape {} overflows: its F32 size does not fit in {} bits",
                fmt_dims(&dims),
                usize::BITS
            )));
        };
        if end < begin {
            return Err(err(format!(
                "data_offsets [{begin}, {end}] end before they begin"
            )));
        }
        if end - begin != nbytes as u64 {
            return Err(err(format!(
                "shape {} needs {nbytes} bytes of F32 data, data_offsets [{begin}, {end}] span {}",
                fmt_dims(&dims),
                end - begin
            )));
        }
        let data_len = ctx.data_len;
        if end > data_len as u64 {
            return Err(err(format!(
                "data_offsets [{begin}, {end}] run past the end of the data section \
                 ({data_len} bytes)"
            )));
        }
        // Both fit in usize now: end <= data_len.
        Ok(Entry {
            dims,
            begin: begin as usize,
            end: end as usize,
        })
    }
}

struct DtypeWant<'c, 'n> {
    ctx: &'c Ctx<'c>,
    name: &'n str,
}

impl<'de> Want<'de> for DtypeWant<'_, '_> {
    type Out = ();
    fn wrong<E: de::Error>(self, found: &str) -> E {
        self.ctx.tensor(
            self.name,
            format!("dtype is {found}, expected the string \"F32\""),
        )
    }
    fn string<E: de::Error>(self, v: &str) -> Result<(), E> {
        if v == "F32" {
            Ok(())
        } else {
            Err(self
                .ctx
                .tensor(self.name, format!("dtype {}, expected F32", esc(v))))
        }
    }
}

struct DimsWant<'c, 'n> {
    ctx: &'c Ctx<'c>,
    name: &'n str,
}

impl<'de> Want<'de> for DimsWant<'_, '_> {
    type Out = Vec<usize>;
    fn wrong<E: de::Error>(self, found: &str) -> E {
        self.ctx.tensor(
            self.name,
            format!("shape is {found}, expected a list of non-negative integers"),
        )
    }
    fn seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<usize>, A::Error> {
        let (ctx, name) = (self.ctx, self.name);
        let mut dims = Vec::new();
        while let Some(d) = a.next_element_seed(V(DimWant {
            ctx,
            name,
            i: dims.len(),
        }))? {
            if dims.len() == MAX_RANK {
                return Err(ctx.tensor(name, format!("shape has more than {MAX_RANK} dimensions")));
            }
            dims.push(d);
        }
        Ok(dims)
    }
}

struct DimWant<'c, 'n> {
    ctx: &'c Ctx<'c>,
    name: &'n str,
    i: usize,
}

impl<'de> Want<'de> for DimWant<'_, '_> {
    type Out = usize;
    fn wrong<E: de::Error>(self, found: &str) -> E {
        self.ctx.tensor(
            self.name,
            format!(
                "shape dimension {} is {found}, expected a non-negative integer",
                self.i
            ),
        )
    }
    fn unsigned<E: de::Error>(self, v: u64) -> Result<usize, E> {
        usize::try_from(v).map_err(|_| {
            self.ctx.tensor(
                self.name,
                format!("shape dimension {} is {v}, too large for this host", self.i),
            )
        })
    }
}

struct OffsetsWant<'c, 'n> {
    ctx: &'c Ctx<'c>,
    name: &'n str,
}

impl<'de> Want<'de> for OffsetsWant<'_, '_> {
    type Out = (u64, u64);
    fn wrong<E: de::Error>(self, found: &str) -> E {
        self.ctx.tensor(
            self.name,
            format!("data_offsets is {found}, expected [begin, end]"),
        )
    }
    fn seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(u64, u64), A::Error> {
        let (ctx, name) = (self.ctx, self.name);
        let mut items = [0u64; 2];
        for (i, slot) in items.iter_mut().enumerate() {
            match a.next_element_seed(V(OffsetWant { ctx, name, i }))? {
                Some(v) => *slot = v,
                None => {
                    return Err(ctx.tensor(
                        name,
                        format!("data_offsets must be [begin, end], found a list of {i} item(s)"),
                    ));
                }
            }
        }
        // A third item: rejected whatever it is, without parsing into it.
        a.next_element_seed(V(TooMany { ctx, name }))?;
        Ok((items[0], items[1]))
    }
}

/// The place after `data_offsets`' second item, where nothing may be.
struct TooMany<'c, 'n> {
    ctx: &'c Ctx<'c>,
    name: &'n str,
}

impl<'de> Want<'de> for TooMany<'_, '_> {
    type Out = ();
    fn wrong<E: de::Error>(self, _found: &str) -> E {
        self.ctx.tensor(
            self.name,
            "data_offsets must be [begin, end], found a list of more than 2 items".into(),
        )
    }
}

struct OffsetWant<'c, 'n> {
    ctx: &'c Ctx<'c>,
    name: &'n str,
    i: usize,
}

impl<'de> Want<'de> for OffsetWant<'_, '_> {
    type Out = u64;
    fn wrong<E: de::Error>(self, found: &str) -> E {
        let which = if self.i == 0 { "begin" } else { "end" };
        self.ctx.tensor(
            self.name,
            format!("data_offsets {which} is {found}, expected a non-negative integer"),
        )
    }
    fn unsigned<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
}
