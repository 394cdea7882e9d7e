//! Fuzz `fractalnet::checkpoint::read_bytes`: no input may panic or allocate without bound;
//! every error is one line naming the file; every accepted file survives a write/read round
//! trip bit for bit; `validate` and `metadata_json` never panic on what was accepted.
#![no_main]

use fractalnet::checkpoint::{TensorSpec, metadata_json, read_bytes, to_bytes, validate};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const PATH: &str = "fuzz/input.safetensors";

fn check_error(e: &fractalnet::Error) {
    let msg = e.to_string();
    assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "multi-line error: {msg:?}"
    );
    assert!(msg.contains(PATH), "error does not name the file: {msg}");
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new(PATH);
    let raw = match read_bytes(path, data) {
        Ok(raw) => raw,
        Err(e) => return check_error(&e),
    };

    // Everything accepted is finite and consistent.
    for (shape, values) in raw.tensors.values() {
        assert_eq!(shape.numel(), values.len());
        assert!(values.iter().all(|v| v.is_finite()));
    }

    // Round trip: write what was read, read it again: same metadata, same bits.
    let tensors: Vec<_> = raw
        .tensors
        .iter()
        .map(|(n, (s, v))| (n.clone(), s.clone(), v.as_slice()))
        .collect();
    let bytes =
        to_bytes(path, &raw.metadata, &tensors).expect("an accepted file must re-serialise");
    let again = read_bytes(path, &bytes).expect("a re-serialised file must read back");
    assert_eq!(again.metadata, raw.metadata);
    assert_eq!(again.tensors.len(), raw.tensors.len());
    for (name, (shape, values)) in &raw.tensors {
        let (s2, v2) = &again.tensors[name];
        assert_eq!(s2, shape);
        assert!(
            values
                .iter()
                .zip(v2)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    // The model-facing checks never panic and give one-line errors.
    if let Err(e) = metadata_json(&raw, "fractalnet_config") {
        check_error(&e);
    }
    let mut names = raw.tensors.keys();
    let required: Vec<TensorSpec> = names
        .next()
        .map(|n| TensorSpec::new(n.clone(), [1]))
        .into_iter()
        .chain(std::iter::once(TensorSpec::new("fc.bias", [10])))
        .collect();
    let optional: Vec<Vec<TensorSpec>> = names
        .next()
        .map(|n| {
            vec![vec![
                TensorSpec::new(n.clone(), [2]),
                TensorSpec::new("x.column_var", [2]),
            ]]
        })
        .unwrap_or_default();
    if let Err(e) = validate(&raw, &required, &optional)
        && !matches!(e, fractalnet::Error::Config { .. })
    {
        check_error(&e);
    }
});
