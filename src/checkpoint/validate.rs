//! Checking a container-valid checkpoint against the tensors a model expects.

use super::{RawCheckpoint, esc, tensor_error};
use crate::error::{Error, Result};
use crate::tensor::Shape;
use std::collections::HashMap;

/// A tensor a model expects: its name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Shape,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, shape: impl Into<Shape>) -> Self {
        TensorSpec {
            name: name.into(),
            shape: shape.into(),
        }
    }
}

/// Every `required` tensor present with that shape, every `optional` group all-or-nothing
/// (e.g. bn.column_mean/var must be both present or both absent for every layer), no tensor
/// outside required ∪ optional.
///
/// The error names the first problem found (required tensors in the order given, then the
/// optional groups in order, then unexpected tensors by name) and counts the others.
/// A name given twice across `required` and `optional_groups` is a caller bug
/// (`Error::Config`).
pub fn validate(
    raw: &RawCheckpoint,
    required: &[TensorSpec],
    optional_groups: &[Vec<TensorSpec>],
) -> Result<()> {
    let mut known: HashMap<&str, ()> = HashMap::new();
    for spec in required.iter().chain(optional_groups.iter().flatten()) {
        if known.insert(spec.name.as_str(), ()).is_some() {
            return Err(Error::config(format!(
                "checkpoint validation: tensor {} is listed twice",
                esc(&spec.name)
            )));
        }
    }

    // (tensor, message) in the order described above.
    let mut problems: Vec<(&str, String)> = Vec::new();
    fn shape_check<'s>(
        raw: &RawCheckpoint,
        spec: &'s TensorSpec,
        problems: &mut Vec<(&'s str, String)>,
    ) {
        if let Some((found, _)) = raw.tensors.get(&spec.name)
            && *found != spec.shape
        {
            problems.push((
                spec.name.as_str(),
                format!(
                    "expected shape {}, found {}",
                    spec.shape,
                    super::fmt_dims(found.dims())
                ),
            ));
        }
    }

    for spec in required {
        if raw.tensors.contains_key(&spec.name) {
            shape_check(raw, spec, &mut problems);
        } else {
            problems.push((
                spec.name.as_str(),
                format!("missing (expected shape {})", spec.shape),
            ));
        }
    }

    for group in optional_groups {
        let present = group.iter().find(|s| raw.tensors.contains_key(&s.name));
        let absent = group.iter().find(|s| !raw.tensors.contains_key(&s.name));
        if let (Some(p), Some(a)) = (present, absent) {
            problems.push((
                a.name.as_str(),
                format!(
                    "missing (expected shape {}), but {} of the same optional group is present; \
                     the group must be all present or all absent",
                    a.shape,
                    esc(&p.name)
                ),
            ));
        }
        for spec in group {
            shape_check(raw, spec, &mut problems);
        }
    }

    for (name, (shape, _)) in &raw.tensors {
        if !known.contains_key(name.as_str()) {
            problems.push((
                name.as_str(),
                format!(
                    "unexpected tensor (shape {}): not part of this model",
                    super::fmt_dims(shape.dims())
                ),
            ));
        }
    }

    let Some((tensor, what)) = problems.first() else {
        return Ok(());
    };
    let more = match problems.len() - 1 {
        0 => String::new(),
        1 => " (and 1 more problem)".to_owned(),
        n => format!(" (and {n} more problems)"),
    };
    Err(tensor_error(&raw.path, tensor, format!("{what}{more}")))
}

/// The JSON object stored under metadata key `key` (e.g. "fractalnet_config"); the error names
/// the file and the key when it is missing, not JSON, or not a JSON object.
pub fn metadata_json(raw: &RawCheckpoint, key: &str) -> Result<serde_json::Value> {
    let format = |what: String| Error::format(&raw.path, what);
    let Some(text) = raw.metadata.get(key) else {
        return Err(format(format!("metadata key \"{}\" is missing", esc(key))));
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format(format!(
            "metadata key \"{}\" is not valid JSON: {}",
            esc(key),
            e.to_string().replace(['\n', '\r'], " ")
        ))
    })?;
    if !value.is_object() {
        let kind = match &value {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "a JSON boolean",
            serde_json::Value::Number(_) => "a JSON number",
            serde_json::Value::String(_) => "a JSON string",
            serde_json::Value::Array(_) => "a JSON array",
            serde_json::Value::Object(_) => "a JSON object",
        };
        return Err(format(format!(
            "metadata key \"{}\" holds {kind}, expected a JSON object",
            esc(key)
        )));
    }
    Ok(value)
}
