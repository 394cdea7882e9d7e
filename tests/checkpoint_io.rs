//! The safetensors I/O layer (`fractalnet::checkpoint`): a corpus of bad inputs, each of which
//! must give a one-line error naming the file and the tensor or field at fault (and never
//! panic), round trips, atomic replacement and compatibility with the `safetensors` crate.

use fractalnet::checkpoint::{
    self, RawCheckpoint, TensorSpec, metadata_json, read, read_bytes, to_bytes, validate,
    write_atomic,
};
use fractalnet::{Error, Shape};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FILE: &str = "corpus/bad.safetensors";

fn p() -> &'static Path {
    Path::new(FILE)
}

/// A file: header length (u64 LE), `header`, `data`.
fn file(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

fn file_json(header: serde_json::Value, data: &[u8]) -> Vec<u8> {
    file(header.to_string().as_bytes(), data)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The error of `r`, checked: one line, names the file and every needle. Returns its text.
fn check_err<T: std::fmt::Debug>(r: fractalnet::Result<T>, needles: &[&str]) -> String {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "not one line: {msg:?}"
    );
    assert!(msg.contains(FILE), "does not name the file: {msg}");
    for n in needles {
        assert!(msg.contains(n), "does not mention {n:?}: {msg}");
    }
    println!("{msg}");
    msg
}

fn bad(bytes: &[u8], needles: &[&str]) -> String {
    check_err(read_bytes(p(), bytes), needles)
}

/// A valid two-tensor file: "a" [2, 3] at [0, 24], "b" [2] at [24, 32].
fn good_header() -> serde_json::Value {
    json!({
        "__metadata__": {"fractalnet_config": "{\"format_version\": 1}"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]},
    })
}

fn good_data() -> Vec<u8> {
    f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -1.0, 0.5])
}

// ---------------------------------------------------------------- container-level corpus

#[test]
fn good_file_reads() {
    let raw = read_bytes(p(), &file_json(good_header(), &good_data())).unwrap();
    assert_eq!(raw.tensors.len(), 2);
    assert_eq!(raw.tensors["a"].0, Shape::new([2, 3]));
    assert_eq!(raw.tensors["b"].1, vec![-1.0, 0.5]);
    assert_eq!(raw.metadata["fractalnet_config"], "{\"format_version\": 1}");
    assert_eq!(raw.path, PathBuf::from(FILE));
}

#[test]
fn empty_file() {
    bad(&[], &["0 bytes", "too short"]);
}

#[test]
fn seven_bytes() {
    bad(&[1, 0, 0, 0, 0, 0, 0], &["7 bytes", "too short"]);
}

#[test]
fn header_length_past_end() {
    let mut b = file_json(good_header(), &good_data());
    let n = b.len() as u64; // longer than everything after the length field
    b[..8].copy_from_slice(&n.to_le_bytes());
    bad(&b, &["header length", "past the end"]);
}

#[test]
fn header_length_huge() {
    let mut b = file_json(good_header(), &good_data());
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    bad(&b, &["header length 18446744073709551615", "limit"]);
    // Just above the cap, with the bytes not even there.
    b[..8].copy_from_slice(&(checkpoint::MAX_HEADER_BYTES + 1).to_le_bytes());
    bad(&b, &["limit"]);
}

#[test]
fn header_length_zero() {
    bad(&file(b"", &[]), &["header is not valid JSON"]);
}

#[test]
fn header_not_utf8() {
    bad(
        &file(b"{\"a\xff\": 1}", &[]),
        &["header is not UTF-8", "offset 3"],
    );
}

#[test]
fn header_bad_json() {
    bad(
        &file(b"{\"a\": {\"dtype\": ", &[]),
        &["header is not valid JSON"],
    );
}

#[test]
fn header_json_array() {
    bad(
        &file(b"[1, 2, 3]", &[]),
        &["header is a JSON array", "expected a JSON object"],
    );
}

#[test]
fn header_deep_nesting() {
    // Nesting is rejected at the first level where it does not belong, never recursed into.
    let h = format!("{{\"a\": {}}}", "[".repeat(5000));
    bad(
        &file(h.as_bytes(), &[]),
        &["tensor a", "header entry is a JSON array"],
    );
    let h = format!(
        "{{\"__metadata__\": {{\"k\": {}}}}}",
        "{\"x\":".repeat(5000)
    );
    bad(
        &file(h.as_bytes(), &[]),
        &["__metadata__ key \"k\" is a JSON object"],
    );
    bad(
        &file("[".repeat(100_000).as_bytes(), &[]),
        &["header is a JSON array"],
    );
}

#[test]
fn tensor_entry_not_object() {
    bad(
        &file_json(json!({"w": [1, 2]}), &[]),
        &["tensor w", "header entry is a JSON array"],
    );
}

#[test]
fn missing_dtype() {
    let h = json!({"w": {"shape": [2], "data_offsets": [0, 8]}});
    bad(
        &file_json(h, &f32_bytes(&[1.0, 2.0])),
        &["tensor w", "no dtype"],
    );
}

#[test]
fn missing_shape_and_missing_offsets() {
    let h = json!({"w": {"dtype": "F32", "data_offsets": [0, 8]}});
    bad(
        &file_json(h, &f32_bytes(&[1.0, 2.0])),
        &["tensor w", "no shape"],
    );
    let h = json!({"w": {"dtype": "F32", "shape": [2]}});
    bad(
        &file_json(h, &f32_bytes(&[1.0, 2.0])),
        &["tensor w", "no data_offsets"],
    );
}

#[test]
fn dtype_f16() {
    let h = json!({"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}});
    bad(
        &file_json(h, &[0; 4]),
        &["tensor w", "dtype F16, expected F32"],
    );
}

#[test]
fn dtype_i64() {
    let h = json!({"w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}});
    bad(
        &file_json(h, &[0; 8]),
        &["tensor w", "dtype I64, expected F32"],
    );
}

#[test]
fn dtype_not_a_string() {
    let h = json!({"w": {"dtype": 32, "shape": [1], "data_offsets": [0, 4]}});
    bad(
        &file_json(h, &[0; 4]),
        &["tensor w", "dtype is the number 32"],
    );
}

#[test]
fn shape_offset_size_mismatch() {
    let h = json!({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}});
    bad(
        &file_json(h, &[0; 20]),
        &["tensor w", "shape [2, 3] needs 24 bytes", "[0, 20] span 20"],
    );
}

#[test]
fn shape_not_integers() {
    let h = json!({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}});
    bad(
        &file_json(h, &[0; 8]),
        &["tensor w", "shape dimension 1 is the number -1"],
    );
    let h = json!({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}});
    bad(
        &file_json(h, &[0; 8]),
        &["tensor w", "shape dimension 0 is the number 2.5"],
    );
    let h = json!({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}});
    bad(
        &file_json(h, &[0; 8]),
        &["tensor w", "shape is a JSON string"],
    );
}

#[test]
fn shape_rank_cap() {
    let dims = vec![1u64; checkpoint::MAX_RANK + 1];
    let h = json!({"w": {"dtype": "F32", "shape": dims, "data_offsets": [0, 4]}});
    bad(
        &file_json(h, &[0; 4]),
        &["tensor w", "more than 64 dimensions"],
    );
    let dims = vec![1u64; checkpoint::MAX_RANK];
    let h = json!({"w": {"dtype": "F32", "shape": dims, "data_offsets": [0, 4]}});
    assert_eq!(
        read_bytes(p(), &file_json(h, &[0; 4])).unwrap().tensors["w"]
            .0
            .rank(),
        64
    );
}

#[test]
fn shape_product_overflow() {
    let big = u64::MAX / 2;
    let h = json!({"w": {"dtype": "F32", "shape": [big, big, 4], "data_offsets": [0, 0]}});
    bad(&file_json(h, &[]), &["tensor w", "overflows"]);
    // numel fits, numel * 4 does not
    let h = json!({"w": {"dtype": "F32", "shape": [u64::MAX / 3], "data_offsets": [0, 0]}});
    bad(&file_json(h, &[]), &["tensor w", "overflows"]);
}

#[test]
fn offsets_past_the_end() {
    let h = json!({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}});
    bad(
        &file_json(h, &[0; 8]),
        &[
            "tensor w",
            "[0, 16] run past the end of the data section (8 bytes)",
        ],
    );
}

#[test]
fn offsets_end_before_begin() {
    let h = json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}});
    bad(
        &file_json(h, &[0; 8]),
        &["tensor w", "end before they begin"],
    );
}

#[test]
fn offsets_malformed() {
    let h = json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}});
    bad(
        &file_json(h, &[0; 8]),
        &["tensor w", "found a list of more than 2 items"],
    );
    let h = json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}});
    bad(
        &file_json(h, &[0; 4]),
        &["tensor w", "found a list of 1 item(s)"],
    );
    let h = json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}});
    bad(
        &file_json(h, &[0; 4]),
        &["tensor w", "data_offsets begin is the number -4"],
    );
    let h = json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": {"begin": 0}}});
    bad(
        &file_json(h, &[0; 4]),
        &["tensor w", "data_offsets is a JSON object"],
    );
}

#[test]
fn overlapping_offsets() {
    let h = json!({
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
    });
    bad(
        &file_json(h, &[0; 16]),
        &["tensor b", "[8, 16] overlap tensor a at [0, 16]"],
    );
}

#[test]
fn hole_in_offsets() {
    let h = json!({
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
    });
    bad(
        &file_json(h, &[0; 12]),
        &["tensor b", "hole of 4 bytes after tensor a"],
    );
    let h = json!({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}});
    bad(
        &file_json(h, &[0; 8]),
        &["tensor a", "hole of 4 bytes at the start"],
    );
}

#[test]
fn trailing_bytes() {
    let mut data = good_data();
    data.extend_from_slice(&[0; 5]);
    bad(
        &file_json(good_header(), &data),
        &["5 unclaimed bytes at the end"],
    );
}

#[test]
fn duplicate_tensor_name() {
    let h = br#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#;
    bad(&file(h, &[0; 4]), &["header names \"w\" twice"]);
}

#[test]
fn duplicate_metadata_and_fields() {
    let h = br#"{"__metadata__": {}, "__metadata__": {}}"#;
    bad(&file(h, &[]), &["header names \"__metadata__\" twice"]);
    let h = br#"{"__metadata__": {"k": "a", "k": "b"}}"#;
    bad(&file(h, &[]), &["__metadata__ names key \"k\" twice"]);
    let h = br#"{"w": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#;
    bad(
        &file(h, &[0; 4]),
        &["tensor w", "header entry names \"dtype\" twice"],
    );
}

#[test]
fn unknown_entry_field() {
    let h = json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "scale": 2}});
    bad(
        &file_json(h, &[0; 4]),
        &["tensor w", "unknown field \"scale\""],
    );
}

#[test]
fn nan_value() {
    let mut v = vec![0.5f32; 24];
    v[17] = f32::NAN;
    let h = json!({"w": {"dtype": "F32", "shape": [2, 3, 4], "data_offsets": [0, 96]}});
    bad(
        &file_json(h, &f32_bytes(&v)),
        &["tensor w", "contains NaN at index 17"],
    );
}

#[test]
fn inf_values() {
    let h = json!({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}});
    bad(
        &file_json(h.clone(), &f32_bytes(&[0.0, f32::INFINITY, 1.0])),
        &["tensor w", "contains +Inf at index 1"],
    );
    bad(
        &file_json(h, &f32_bytes(&[0.0, 1.0, f32::NEG_INFINITY])),
        &["tensor w", "contains -Inf at index 2"],
    );
}

#[test]
fn metadata_not_string_map() {
    let mut h = good_header();
    h["__metadata__"] = json!({"epoch": 3});
    bad(
        &file_json(h.clone(), &good_data()),
        &["__metadata__ key \"epoch\" is the number 3, expected a string"],
    );
    h["__metadata__"] = json!(["a", "b"]);
    bad(
        &file_json(h, &good_data()),
        &["__metadata__ is a JSON array"],
    );
}

#[test]
fn metadata_null_is_empty() {
    let mut h = good_header();
    h["__metadata__"] = serde_json::Value::Null;
    let raw = read_bytes(p(), &file_json(h, &good_data())).unwrap();
    assert!(raw.metadata.is_empty());
}

#[test]
fn control_characters_in_names_stay_on_one_line() {
    let h = json!({"evil\nname\r\u{2028}": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}});
    bad(
        &file_json(h, &[0; 2]),
        &["tensor evil\\nname\\r\\u{2028}", "dtype F16"],
    );
    let h = json!({"w": {"dtype": "F16\nX", "shape": [1], "data_offsets": [0, 2]}});
    bad(&file_json(h, &[0; 2]), &["dtype F16\\nX"]);
}

#[test]
fn every_truncation_of_a_good_file_is_an_error() {
    let b = file_json(good_header(), &good_data());
    for n in 0..b.len() {
        let e = read_bytes(p(), &b[..n]).expect_err("a truncated file must not read");
        let msg = e.to_string();
        assert!(!msg.contains('\n') && msg.contains(FILE), "{msg}");
    }
}

#[test]
fn every_single_byte_corruption_reads_or_errors_cleanly() {
    let b = file_json(good_header(), &good_data());
    for i in 0..b.len() {
        for x in [0x00u8, 0xff, b'"', b'9', b'}', 0x7f, 0x80] {
            let mut c = b.clone();
            c[i] = x;
            if let Err(e) = read_bytes(p(), &c) {
                let msg = e.to_string();
                assert!(!msg.contains('\n') && msg.contains(FILE), "{msg}");
            }
        }
    }
}

// ---------------------------------------------------------------- validate / metadata_json

fn raw_with(tensors: &[(&str, &[usize])]) -> RawCheckpoint {
    let mut map = BTreeMap::new();
    for (name, dims) in tensors {
        let shape = Shape::new(*dims);
        let n = shape.numel();
        map.insert(name.to_string(), (shape, vec![0.0; n]));
    }
    RawCheckpoint {
        path: PathBuf::from(FILE),
        metadata: BTreeMap::new(),
        tensors: map,
    }
}

const W: &str = "block0.col0.layer0.conv.weight";
const MEAN: &str = "block0.col0.layer0.bn.column_mean";
const VAR: &str = "block0.col0.layer0.bn.column_var";

fn required() -> Vec<TensorSpec> {
    vec![
        TensorSpec::new(W, [16, 3, 3, 3]),
        TensorSpec::new("fc.bias", [10]),
    ]
}

fn optional() -> Vec<Vec<TensorSpec>> {
    vec![vec![
        TensorSpec::new(MEAN, [16]),
        TensorSpec::new(VAR, [16]),
    ]]
}

#[test]
fn validate_accepts_with_and_without_optional_group() {
    let raw = raw_with(&[(W, &[16, 3, 3, 3]), ("fc.bias", &[10])]);
    validate(&raw, &required(), &optional()).unwrap();
    let raw = raw_with(&[
        (W, &[16, 3, 3, 3]),
        ("fc.bias", &[10]),
        (MEAN, &[16]),
        (VAR, &[16]),
    ]);
    validate(&raw, &required(), &optional()).unwrap();
}

#[test]
fn validate_missing_tensor() {
    let raw = raw_with(&[(W, &[16, 3, 3, 3])]);
    check_err(
        validate(&raw, &required(), &optional()),
        &["tensor fc.bias", "missing (expected shape [10])"],
    );
}

#[test]
fn validate_extra_tensor() {
    let raw = raw_with(&[(W, &[16, 3, 3, 3]), ("fc.bias", &[10]), ("fc.extra", &[3])]);
    check_err(
        validate(&raw, &required(), &optional()),
        &["tensor fc.extra", "unexpected tensor"],
    );
}

#[test]
fn validate_wrong_shape() {
    let raw = raw_with(&[(W, &[16, 3, 3]), ("fc.bias", &[10])]);
    check_err(
        validate(&raw, &required(), &optional()),
        &[
            &format!("tensor {W}"),
            "expected shape [16, 3, 3, 3], found [16, 3, 3]",
        ],
    );
}

#[test]
fn validate_optional_group_half_present() {
    let raw = raw_with(&[(W, &[16, 3, 3, 3]), ("fc.bias", &[10]), (MEAN, &[16])]);
    check_err(
        validate(&raw, &required(), &optional()),
        &[
            &format!("tensor {VAR}"),
            "missing",
            MEAN,
            "all present or all absent",
        ],
    );
}

#[test]
fn validate_optional_wrong_shape() {
    let raw = raw_with(&[
        (W, &[16, 3, 3, 3]),
        ("fc.bias", &[10]),
        (MEAN, &[16]),
        (VAR, &[8]),
    ]);
    check_err(
        validate(&raw, &required(), &optional()),
        &[&format!("tensor {VAR}"), "expected shape [16], found [8]"],
    );
}

#[test]
fn validate_counts_further_problems() {
    let raw = raw_with(&[("x", &[1]), ("y", &[1])]);
    check_err(
        validate(&raw, &required(), &optional()),
        &[&format!("tensor {W}"), "missing", "(and 3 more problems)"],
    );
}

#[test]
fn validate_spec_listing_a_name_twice_is_a_config_error() {
    let raw = raw_with(&[]);
    let req = vec![TensorSpec::new("a", [1]), TensorSpec::new("a", [1])];
    let e = validate(&raw, &req, &[]).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
}

fn raw_meta(key: &str, value: &str) -> RawCheckpoint {
    let mut raw = raw_with(&[]);
    raw.metadata.insert(key.to_owned(), value.to_owned());
    raw
}

#[test]
fn metadata_json_ok() {
    let raw = raw_meta(
        "fractalnet_config",
        r#"{"format_version": 1, "channels": [16, 32]}"#,
    );
    let v = metadata_json(&raw, "fractalnet_config").unwrap();
    assert_eq!(v["format_version"], 1);
}

#[test]
fn metadata_key_missing() {
    let raw = raw_meta("other", "{}");
    check_err(
        metadata_json(&raw, "fractalnet_config"),
        &["metadata key \"fractalnet_config\" is missing"],
    );
}

#[test]
fn metadata_value_not_json() {
    let raw = raw_meta("fractalnet_config", "{format_version: 1}");
    check_err(
        metadata_json(&raw, "fractalnet_config"),
        &["metadata key \"fractalnet_config\" is not valid JSON"],
    );
}

#[test]
fn metadata_value_not_object() {
    let raw = raw_meta("fractalnet_config", "[1, 2]");
    check_err(
        metadata_json(&raw, "fractalnet_config"),
        &["metadata key \"fractalnet_config\" holds a JSON array, expected a JSON object"],
    );
}

#[test]
fn raw_tensor_lookup() {
    let raw = raw_with(&[("a", &[2])]);
    assert_eq!(raw.tensor("a").unwrap().1, &[0.0, 0.0]);
    check_err(raw.tensor("b"), &["tensor b", "missing"]);
}

// ---------------------------------------------------------------- round trips and atomicity

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fractalnet-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic values that exercise every bit pattern class except NaN/Inf.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let special = [
        0.0f32,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE / 4.0, // subnormal
        f32::MAX,
        f32::MIN,
        1.0 / 3.0,
        f32::EPSILON,
    ];
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|i| {
            if i < special.len() {
                return special[i];
            }
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let v = f32::from_bits(s);
            if v.is_finite() { v } else { (s as f32) * 1e-3 }
        })
        .collect()
}

fn shapes() -> Vec<Vec<usize>> {
    vec![
        vec![1],
        vec![7],
        vec![2, 3],
        vec![16, 3, 3, 3],
        vec![10, 128],
        vec![0],
        vec![4, 0, 2],
        vec![1, 1, 1, 1, 1],
        vec![3, 1, 5, 1, 2, 2],
    ]
}

fn assert_same(raw: &RawCheckpoint, tensors: &[(String, Shape, Vec<f32>)]) {
    assert_eq!(raw.tensors.len(), tensors.len());
    for (name, shape, v) in tensors {
        let (s, got) = &raw.tensors[name];
        assert_eq!(s, shape, "{name}");
        let a: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
        let b: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        assert_eq!(a, b, "{name}");
    }
}

fn refs(t: &[(String, Shape, Vec<f32>)]) -> Vec<(String, Shape, &[f32])> {
    t.iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice()))
        .collect()
}

#[test]
fn round_trip_many_shapes() {
    let dir = scratch("roundtrip");
    let path = dir.join("model.safetensors");
    let mut meta = BTreeMap::new();
    meta.insert(
        "fractalnet_config".to_owned(),
        r#"{"format_version": 1, "channels": [16, 32]}"#.to_owned(),
    );
    meta.insert("epoch".to_owned(), "12".to_owned());
    meta.insert(
        "odd \"key\"\n".to_owned(),
        "välue\twith\u{0}escapes".to_owned(),
    );
    for (i, dims) in shapes().into_iter().enumerate() {
        let shape = Shape::new(dims);
        let t = vec![
            (
                format!("t{i}"),
                shape.clone(),
                values(shape.numel(), i as u32),
            ),
            ("fc.bias".to_owned(), Shape::new([3]), values(3, 99)),
        ];
        for m in [&meta, &BTreeMap::new()] {
            write_atomic(&path, m, &refs(&t)).unwrap();
            let raw = read(&path).unwrap();
            assert_eq!(&raw.metadata, m);
            assert_eq!(raw.path, path);
            assert_same(&raw, &t);
        }
    }
    // All shapes in one file, plus an empty file (no tensors, no metadata).
    let all: Vec<_> = shapes()
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let s = Shape::new(d);
            (
                format!("block{i}.w"),
                s.clone(),
                values(s.numel(), 7 + i as u32),
            )
        })
        .collect();
    write_atomic(&path, &meta, &refs(&all)).unwrap();
    assert_same(&read(&path).unwrap(), &all);
    write_atomic(&path, &BTreeMap::new(), &[]).unwrap();
    let raw = read(&path).unwrap();
    assert!(raw.tensors.is_empty() && raw.metadata.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn to_bytes_is_deterministic_and_reads_back() {
    let t: Vec<_> = (0..20)
        .map(|i| {
            (
                format!("n{i}"),
                Shape::new([i % 4 + 1, 2]),
                values(2 * (i % 4 + 1), i as u32),
            )
        })
        .collect();
    let mut meta = BTreeMap::new();
    for k in 0..10 {
        meta.insert(format!("k{k}"), format!("v{k}"));
    }
    let a = to_bytes(p(), &meta, &refs(&t)).unwrap();
    let mut rev = refs(&t);
    rev.reverse();
    let b = to_bytes(p(), &meta, &rev).unwrap();
    assert_eq!(a, b, "the input order must not matter");
    assert_same(&read_bytes(p(), &a).unwrap(), &t);
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn atomic_write_replaces_whole_and_leaves_no_temp_file() {
    let dir = scratch("atomic");
    let path = dir.join("ckpt.safetensors");
    // A big pre-existing file (not even a checkpoint).
    std::fs::write(&path, vec![0xabu8; 1 << 20]).unwrap();
    let t = vec![("w".to_owned(), Shape::new([3]), vec![1.0f32, 2.0, 3.0])];
    write_atomic(&path, &BTreeMap::new(), &refs(&t)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, to_bytes(&path, &BTreeMap::new(), &refs(&t)).unwrap());
    assert_same(&read(&path).unwrap(), &t);
    assert_eq!(dir_entries(&dir), vec!["ckpt.safetensors"]);

    // A write that fails validation leaves the old file untouched and no temp file.
    let bad = vec![("w".to_owned(), Shape::new([2]), vec![1.0f32, f32::NAN])];
    let msg = write_atomic(&path, &BTreeMap::new(), &refs(&bad))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tensor w") && msg.contains("NaN") && !msg.contains('\n'),
        "{msg}"
    );
    let mismatch = vec![("w".to_owned(), Shape::new([4]), vec![1.0f32])];
    let msg = write_atomic(&path, &BTreeMap::new(), &refs(&mismatch))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("shape [4] does not hold the 1 values"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(dir_entries(&dir), vec!["ckpt.safetensors"]);

    // Writing into a directory that does not exist is an I/O error naming the file.
    let missing = dir.join("no/such/dir/x.safetensors");
    let e = write_atomic(&missing, &BTreeMap::new(), &refs(&t)).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("x.safetensors"), "{e}");

    // Renaming over a directory fails cleanly and removes the temporary file.
    let sub = dir.join("sub.safetensors");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("keep"), b"x").unwrap();
    assert!(write_atomic(&sub, &BTreeMap::new(), &refs(&t)).is_err());
    assert_eq!(
        dir_entries(&dir),
        vec!["ckpt.safetensors", "sub.safetensors"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn concurrent_writers_leave_one_whole_file() {
    let dir = scratch("concurrent");
    let path = dir.join("c.safetensors");
    let sets: Vec<Vec<(String, Shape, Vec<f32>)>> = (0..8)
        .map(|k| {
            vec![(
                "w".to_owned(),
                Shape::new([1000 * (k + 1)]),
                values(1000 * (k + 1), k as u32),
            )]
        })
        .collect();
    std::thread::scope(|s| {
        for set in &sets {
            let path = &path;
            s.spawn(move || {
                for _ in 0..5 {
                    write_atomic(path, &BTreeMap::new(), &refs(set)).unwrap();
                }
            });
        }
    });
    let raw = read(&path).unwrap();
    let n = raw.tensors["w"].1.len();
    let set = sets.iter().find(|s| s[0].2.len() == n).unwrap();
    assert_same(&raw, set);
    assert_eq!(dir_entries(&dir), vec!["c.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_missing_file_is_io_error() {
    let e = read(Path::new("/nonexistent/dir/m.safetensors")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("m.safetensors") && !msg.contains('\n'),
        "{msg}"
    );
}

// ---------------------------------------------------------------- safetensors crate compatibility

#[test]
fn reads_what_the_safetensors_crate_writes() {
    use safetensors::tensor::{Dtype, TensorView};
    let t: Vec<_> = shapes()
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let s = Shape::new(d);
            (format!("x{i}"), s.clone(), values(s.numel(), 40 + i as u32))
        })
        .collect();
    let bytes: Vec<Vec<u8>> = t.iter().map(|(_, _, v)| f32_bytes(v)).collect();
    let views: Vec<(String, TensorView<'_>)> = t
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.dims().to_vec(), b).unwrap(),
            )
        })
        .collect();
    let mut info = std::collections::HashMap::new();
    info.insert(
        "fractalnet_config".to_owned(),
        "{\"format_version\":1}".to_owned(),
    );
    let theirs = safetensors::serialize(views.clone(), Some(info.clone())).unwrap();
    let raw = read_bytes(p(), &theirs).unwrap();
    assert_same(&raw, &t);
    assert_eq!(raw.metadata["fractalnet_config"], "{\"format_version\":1}");

    // With at most one metadata key our bytes are the crate's bytes.
    let meta: BTreeMap<_, _> = info.into_iter().collect();
    assert_eq!(to_bytes(p(), &meta, &refs(&t)).unwrap(), theirs);
    let theirs_no_meta = safetensors::serialize(views, None).unwrap();
    assert_eq!(
        to_bytes(p(), &BTreeMap::new(), &refs(&t)).unwrap(),
        theirs_no_meta
    );

    // And the crate reads what we write, metadata included.
    let mut meta = BTreeMap::new();
    for k in 0..5 {
        meta.insert(format!("k{k}"), format!("v{k}"));
    }
    let ours = to_bytes(p(), &meta, &refs(&t)).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(&ours).unwrap();
    assert_eq!(m.metadata().as_ref().unwrap().len(), 5);
    let st = safetensors::SafeTensors::deserialize(&ours).unwrap();
    for (i, (n, s, _)) in t.iter().enumerate() {
        let v = st.tensor(n).unwrap();
        assert_eq!(v.shape(), s.dims());
        assert_eq!(v.data(), bytes[i].as_slice());
    }
}

#[test]
fn reads_unpadded_headers_in_any_key_order() {
    // Hand-written: header of odd length, tensors listed out of offset order, whitespace.
    let h = br#" { "b" : {"data_offsets":[4,12],"shape":[2],"dtype":"F32"},
                  "a" : {"dtype":"F32","shape":[1],"data_offsets":[0,4]} } "#;
    assert_ne!(h.len() % 8, 0);
    let raw = read_bytes(p(), &file(h, &f32_bytes(&[1.0, 2.0, 3.0]))).unwrap();
    assert_eq!(raw.tensors["a"].1, vec![1.0]);
    assert_eq!(raw.tensors["b"].1, vec![2.0, 3.0]);
}

#[test]
fn fuzz_seeds_are_valid_checkpoints() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/checkpoint_loader");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let raw = read(&path).unwrap_or_else(|e| panic!("{e}"));
        // And our writer reproduces each seed byte for byte.
        let t: Vec<_> = raw
            .tensors
            .iter()
            .map(|(n, (s, v))| (n.clone(), s.clone(), v.as_slice()))
            .collect();
        assert_eq!(
            to_bytes(&path, &raw.metadata, &t).unwrap(),
            std::fs::read(&path).unwrap(),
            "{}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 4);
}
