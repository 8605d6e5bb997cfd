//! Writes the seed corpus under `rust/fuzz/corpus/<target>/` from valid encodings of a fixed
//! set of values, ids and records. Deterministic: rerunning rewrites the same files.
//!
//! `cargo run --manifest-path rust/fuzz/Cargo.toml --example gen_corpus`
//! (the targets' own finds are added with `scripts/fuzz.sh --merge`, see README.md).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use reactive_core::codec;
use reactive_core::id::{DocumentId, InternalId, TableNumber};
use reactive_core::keys::{encode_optional, value_key};
use reactive_core::value::Value;
use reactive_core_fuzz::write_value;

fn obj(fields: &[(&str, Value)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn s(x: &str) -> Value {
    Value::String(x.to_owned())
}

fn samples() -> Vec<Value> {
    vec![
        Value::Null,
        Value::Int64(0),
        Value::Int64(1),
        Value::Int64(-1),
        Value::Int64(255),
        Value::Int64(256),
        Value::Int64(-129),
        Value::Int64(70_000),
        Value::Int64(-70_000),
        Value::Int64(5_000_000_000),
        Value::Int64(i64::MIN),
        Value::Int64(i64::MAX),
        Value::Float64(0.0),
        Value::Float64(-0.0),
        Value::Float64(1.5),
        Value::Float64(-2.25),
        Value::Float64(f64::INFINITY),
        Value::Float64(f64::NEG_INFINITY),
        Value::Float64(f64::NAN),
        Value::Float64(1_700_000_000_123.5),
        Value::Boolean(false),
        Value::Boolean(true),
        s(""),
        s("a"),
        s("a\0"),
        s("a\0b"),
        s("héllo ✓ 😀"),
        Value::Bytes(vec![]),
        Value::Bytes(vec![0]),
        Value::Bytes(vec![0, 0xFF, 1]),
        Value::Array(vec![]),
        Value::Array(vec![Value::Null, Value::Int64(1), s("x")]),
        Value::Array(vec![Value::Array(vec![Value::Array(vec![])])]),
        obj(&[]),
        obj(&[("", Value::Null)]),
        obj(&[("a", Value::Int64(1)), ("b", s("two"))]),
        obj(&[(
            "a",
            obj(&[(
                "b",
                Value::Array(vec![Value::Float64(0.5), Value::Bytes(vec![7])]),
            )]),
        )]),
        obj(&[
            ("author", s("ada")),
            ("body", s("hello, world")),
            ("tags", Value::Array(vec![s("x"), s("y")])),
            ("score", Value::Float64(3.25)),
            ("count", Value::Int64(42)),
            ("blob", Value::Bytes(vec![1, 2, 3])),
            ("done", Value::Boolean(true)),
            ("_creationTime", Value::Float64(1_700_000_000_000.0)),
        ]),
    ]
}

fn id(table: u32, fill: u8) -> DocumentId {
    let mut internal = [fill; 16];
    internal[0] = fill.wrapping_mul(7);
    DocumentId {
        table: TableNumber(table),
        internal: InternalId(internal),
    }
}

struct Dir {
    path: PathBuf,
    count: usize,
}

impl Dir {
    fn new(root: &Path, target: &str) -> Dir {
        let path = root.join(target);
        fs::create_dir_all(&path).expect("create corpus dir");
        // Rewrite the generated seeds; keep files added by merges.
        for entry in fs::read_dir(&path).expect("read corpus dir").flatten() {
            if entry.file_name().to_string_lossy().starts_with("seed-") {
                fs::remove_file(entry.path()).expect("remove old seed");
            }
        }
        Dir { path, count: 0 }
    }

    fn put(&mut self, name: &str, bytes: &[u8]) {
        self.count += 1;
        fs::write(
            self.path.join(format!("seed-{:03}-{name}", self.count)),
            bytes,
        )
        .expect("write seed");
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let values = samples();

    // index_key_decode: keys of single values, and tuples as the indexes store them.
    let mut d = Dir::new(&root, "index_key_decode");
    for v in &values {
        d.put("value", &value_key(v));
    }
    let doc = id(10001, 3).encode();
    for (field, name) in [
        (None, "undefined"),
        (Some(s("ada")), "string"),
        (Some(Value::Int64(7)), "int"),
    ] {
        let mut key = Vec::new();
        encode_optional(field.as_ref(), &mut key);
        encode_optional(Some(&Value::Float64(1_700_000_000_000.25)), &mut key);
        encode_optional(Some(&s(&doc)), &mut key);
        d.put(&format!("tuple-{name}"), &key);
    }
    println!("index_key_decode: {} seeds", d.count);

    // index_key_order: mode byte, a, b (or a mutation of a), x, nesting count.
    let mut d = Dir::new(&root, "index_key_order");
    let pairs: Vec<(u8, &Value, &Value)> = vec![
        (0, &values[1], &values[12]),  // int64 0 vs float 0.0
        (0, &values[12], &values[13]), // +0.0 vs -0.0
        (0, &values[23], &values[24]), // "a" vs "a\0"
        (0, &values[28], &values[29]), // bytes prefix
        (0, &values[34], &values[33]), // {"": null} vs {}
        (0, &values[35], &values[36]),
        (0, &values[18], &values[17]), // NaN vs -inf
        (0, &values[10], &values[11]),
        (0, &values[31], &values[32]),
        (1, &values[37], &values[37]),
        (1, &values[26], &values[26]),
        (1, &values[36], &values[36]),
        (0x81, &values[31], &values[31]),
    ];
    for (mode, a, b) in pairs {
        let mut input = vec![mode];
        write_value(a, &mut input);
        if mode % 2 == 0 {
            write_value(b, &mut input);
        } else {
            input.extend_from_slice(&[1, 0]); // tweak, upwards
        }
        write_value(&Value::Null, &mut input);
        input.push(if mode & 0x80 != 0 { 66 } else { 0 });
        d.put("pair", &input);
    }
    println!("index_key_order: {} seeds", d.count);

    // stored_value_decode: stored forms (plain and zstd) and plain payloads.
    let mut d = Dir::new(&root, "stored_value_decode");
    for v in &values {
        d.put("stored", &codec::encode_stored(v));
    }
    for v in [&values[31], &values[35], &values[37]] {
        d.put("plain", &codec::encode_plain(v));
    }
    let big = Value::Array(
        (0..300)
            .map(|i| obj(&[("n", Value::Int64(i)), ("s", s("abcdefgh"))]))
            .collect(),
    );
    let stored = codec::encode_stored(&big);
    assert_eq!(stored[0], codec::FORMAT_ZSTD);
    d.put("zstd-array", &stored);
    let stored = codec::encode_stored(&s(&"reactive ".repeat(600)));
    assert_eq!(stored[0], codec::FORMAT_ZSTD);
    d.put("zstd-string", &stored);
    println!("stored_value_decode: {} seeds", d.count);
    // Known bugs (kept as regression inputs; see README.md): small zstd values whose
    // decoding reserves far more than the decompressed payload, because every array and
    // object reserves `count` items of `size_of::<Value>()` (32) bytes up front, with count
    // bounded only by the bytes left, and nested containers each claim the same bytes.
    let root_dir = root.join("stored_value_decode");
    let mut plain = vec![0x07];
    codec::write_varint(5_000_000, &mut plain); // 160 MB reserved by one Vec
    plain.resize(plain.len() + 5_000_000, 0);
    fs::write(
        root_dir.join("bug-alloc-flat-array"),
        codec::store_plain(&plain),
    )
    .expect("write");
    let mut plain = Vec::new();
    let n = 2_000_000; // 64 MB reserved at each of 65 levels
    for level in 0..65 {
        plain.push(0x07);
        codec::write_varint(n - level * 5, &mut plain);
    }
    plain.resize(plain.len() + n as usize, 0);
    fs::write(
        root_dir.join("bug-alloc-nested-arrays"),
        codec::store_plain(&plain),
    )
    .expect("write");

    // document_id_parse: mode 0 text, mode 1 bytes, mode 2 (table, internal a, internal b).
    let mut d = Dir::new(&root, "document_id_parse");
    for (table, fill) in [
        (1, 0),
        (127, 1),
        (128, 2),
        (10001, 3),
        (16384, 4),
        (u32::MAX, 5),
    ] {
        let i = id(table, fill);
        let mut text = vec![0];
        text.extend_from_slice(i.encode().as_bytes());
        d.put("text", &text);
        let mut bytes = vec![1];
        bytes.extend_from_slice(&i.to_bytes());
        d.put("bytes", &bytes);
        let mut parts = vec![2];
        parts.extend_from_slice(&table.to_le_bytes());
        parts.extend_from_slice(&i.internal.0);
        parts.extend_from_slice(&id(table, fill.wrapping_add(1)).internal.0);
        d.put("parts", &parts);
    }
    d.put("text-spec", b"\x00j57000820c20a1g7104gm2rc1m70ynr8");
    println!("document_id_parse: {} seeds", d.count);
}
