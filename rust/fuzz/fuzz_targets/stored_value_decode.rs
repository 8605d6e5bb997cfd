//! Stored-value decoding (`codec::decode_stored`, `decode_plain` and the streaming `Decoder`
//! with `skip_value`, `lookup`, `object_without`, `transcode_to_key`) on arbitrary bytes:
//! never panics, never allocates without bound (libFuzzer's -malloc_limit_mb and
//! -rss_limit_mb turn a large allocation into a crash; `scripts/fuzz.sh` sets them), and
//! whatever decodes round-trips bit for bit through `encode_stored`.
//!
//! The input is read twice: as a stored value (format byte + payload) and as a plain
//! payload (what the streaming decoder reads from a document's contiguous encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reactive_core::codec::{
    self, Decoder, decode_plain, decode_stored, encode_plain, encode_stored, lookup,
    object_without, transcode_to_key,
};
use reactive_core::keys::value_key;
use reactive_core::value::Value;
use reactive_core_fuzz::{hex, same};

fuzz_target!(|data: &[u8]| {
    // As a stored value.
    match decode_stored(data) {
        Ok(v) => {
            let stored = encode_stored(&v);
            let back = decode_stored(&stored).expect("encode_stored output does not decode");
            assert!(
                same(&back, &v),
                "stored round trip changed {v:?} into {back:?}"
            );
            if data.first() == Some(&codec::FORMAT_PLAIN) {
                assert!(same(&decode_plain(&data[1..]).expect("plain payload"), &v));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // As a plain payload, whole and streamed.
    let decoded = decode_plain(data);
    let skipped = Decoder::new(data).skip_value();
    let mut key = Vec::new();
    let transcoded = transcode_to_key(data, &mut key);
    let _ = lookup(data, &["a".to_owned(), "b".to_owned()]);
    let _ = object_without(data, "a");
    let Ok(v) = decoded else { return };

    let plain = encode_plain(&v);
    let back = decode_plain(&plain).expect("encode_plain output does not decode");
    assert!(
        same(&back, &v),
        "plain round trip changed {v:?} into {back:?}"
    );
    // Non-canonical input (a varint with extra 0x80 bytes) decodes; its canonical form is
    // never longer.
    assert!(
        plain.len() <= data.len(),
        "re-encoding grew {} to {}",
        hex(data),
        hex(&plain)
    );

    let skipped = skipped.expect("skip_value refuses a value that decodes");
    assert_eq!(
        skipped.len(),
        data.len(),
        "skip_value stops early in {}",
        hex(data)
    );
    transcoded.expect("transcode_to_key refuses a value that decodes");
    assert_eq!(
        key,
        value_key(&v),
        "transcode_to_key disagrees with keys::value_key"
    );

    if let Value::Object(fields) = &v {
        for (name, field) in fields {
            let found = lookup(data, std::slice::from_ref(name))
                .expect("lookup fails on a decodable object")
                .expect("lookup misses a field");
            assert!(same(&decode_plain(found).expect("field bytes"), field));
            let without = object_without(data, name).expect("object_without fails");
            let rest = decode_plain(&without).expect("object_without output does not decode");
            let mut want = fields.clone();
            want.remove(name);
            assert!(
                same(&rest, &Value::Object(want)),
                "object_without({name:?}) wrong"
            );
        }
        // A name no field has is missed (the decoder accepts any name, this one too).
        let absent = "\u{0}missing".to_owned();
        let found = lookup(data, std::slice::from_ref(&absent)).ok();
        assert_eq!(found.map(|f| f.is_some()), Some(fields.contains_key(&absent)));
    }
});
