//! Index-key decoding (`keys::decode_value`, `decode_tuple`, `first_value_len`) on arbitrary
//! bytes: never panics, and whatever decodes is canonical, so encoding the decoded values
//! gives back exactly the input (`docs/design/index-keys.md`: every value has one encoding).
//! Decoded values also survive the stored-value codec and its key transcoder unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reactive_core::codec;
use reactive_core::keys::{decode_tuple, decode_value, encode_optional, first_value_len};
use reactive_core_fuzz::{hex, same};

fuzz_target!(|data: &[u8]| {
    // One value filling the input.
    match decode_value(data) {
        Ok(v) => {
            let mut again = Vec::new();
            encode_optional(v.as_ref(), &mut again);
            assert_eq!(
                again,
                data,
                "decode_value accepted a non-canonical key {}",
                hex(data)
            );
            if let Some(v) = &v {
                // The stored-value codec keeps the value bit for bit, and its transcoder
                // produces the same key.
                let plain = codec::encode_plain(v);
                let back = codec::decode_plain(&plain).expect("codec refuses a decoded key value");
                assert!(
                    same(&back, v),
                    "codec round trip changed {v:?} into {back:?}"
                );
                let mut key = Vec::new();
                codec::transcode_to_key(&plain, &mut key).expect("transcode_to_key failed");
                assert_eq!(key, data, "transcode_to_key disagrees with the key");
            }
        }
        Err(e) => {
            assert!(
                e.offset <= data.len(),
                "error offset {} past the end",
                e.offset
            );
            let _ = e.to_string();
        }
    }

    // A tuple of values filling the input.
    if let Ok(values) = decode_tuple(data) {
        let mut again = Vec::new();
        for v in &values {
            encode_optional(v.as_ref(), &mut again);
        }
        assert_eq!(
            again,
            data,
            "decode_tuple accepted a non-canonical key {}",
            hex(data)
        );
        // Each element's length is what first_value_len says.
        let mut rest = data;
        for v in &values {
            let n = first_value_len(rest).expect("first_value_len refuses a tuple element");
            let one = decode_value(&rest[..n]).expect("element does not decode alone");
            assert_eq!(one.as_ref(), v.as_ref());
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
    }

    // The first value of the input: its prefix decodes alone to the same value.
    if let Ok(n) = first_value_len(data) {
        assert!(n > 0 && n <= data.len());
        let first = decode_value(&data[..n]).expect("first value does not decode alone");
        if n == data.len() {
            assert_eq!(Ok(first), decode_value(data));
        }
    }
});
