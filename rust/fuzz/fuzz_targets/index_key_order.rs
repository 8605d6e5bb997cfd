//! Index-key order: for two values built from the fuzz input, the memcmp order of their keys
//! is Convex's value order (spec §12), checked against a comparator written from the spec
//! (`reactive_core_fuzz::spec_cmp`) and against `Value`'s `Ord`. Also: keys round-trip,
//! tuples compare element by element (undefined first), and an `eq` range
//! `[key(a), key(a) ++ 0xFF)` holds a key that starts with value `b` exactly when `a == b`
//! (`docs/design/index-keys.md`, "Ranges").
//!
//! Input layout (see `reactive_core_fuzz::gen_value`): a mode byte, then value `a`, then
//! either value `b` (mode even) or a mutation of `a` (mode odd: nearby values share long
//! key prefixes), then a third value `x` that follows `b` in a tuple, then a nesting count
//! that wraps `a` and `b` in that many arrays (mostly 0; up to 70, past the depth limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reactive_core::keys::{decode_tuple, decode_value, encode_optional, value_key};
use reactive_core::value::Value;
use reactive_core_fuzz::{deep_wrap, gen_value, hex, mutate, same, spec_cmp, spec_cmp_optional};

/// Values nested deeper than this are over the limits; the decoder refuses them (it allows
/// `MAX_VALUE_DEPTH + 2` levels), so round trips are only checked below it.
const DECODABLE_DEPTH: usize = reactive_core::limits::MAX_VALUE_DEPTH + 1;

fn check_round_trip(v: &Value, key: &[u8]) {
    if v.depth() > DECODABLE_DEPTH {
        return;
    }
    match decode_value(key) {
        Ok(Some(back)) => assert!(same(&back, v), "key of {v:?} decodes to {back:?}"),
        other => panic!("key {} of {v:?} decodes to {other:?}", hex(key)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    let Ok(a) = gen_value(&mut u, 0) else { return };
    let b = if mode % 2 == 0 {
        gen_value(&mut u, 0)
    } else {
        mutate(&mut u, &a, 0)
    };
    let Ok(b) = b else { return };
    let x = gen_value(&mut u, 0).unwrap_or(Value::Null);
    let levels = match u.arbitrary::<u8>().unwrap_or(0) {
        n @ 0..=70 if mode & 0x80 != 0 => usize::from(n),
        _ => 0,
    };
    let (a, b) = (deep_wrap(a, levels), deep_wrap(b, levels));

    let (ka, kb) = (value_key(&a), value_key(&b));
    let expected = spec_cmp(&a, &b);
    assert_eq!(
        ka.cmp(&kb),
        expected,
        "key order disagrees with spec order for\n a = {a:?}\n b = {b:?}\n key(a) = {}\n key(b) = {}",
        hex(&ka),
        hex(&kb)
    );
    assert_eq!(
        a.cmp(&b),
        expected,
        "Value::cmp disagrees with spec order for {a:?} vs {b:?}"
    );
    check_round_trip(&a, &ka);
    check_round_trip(&b, &kb);

    // Tuples: (a, x) vs (b, x), (a) vs (b, x), and undefined in either place.
    let tuples: [(Vec<Option<&Value>>, Vec<Option<&Value>>); 4] = [
        (vec![Some(&a), Some(&x)], vec![Some(&b), Some(&x)]),
        (vec![Some(&a)], vec![Some(&b), Some(&x)]),
        (vec![None, Some(&a)], vec![Some(&b)]),
        (vec![Some(&a), None], vec![Some(&b), Some(&x)]),
    ];
    for (ta, tb) in &tuples {
        let enc = |t: &Vec<Option<&Value>>| {
            let mut out = Vec::new();
            for v in t {
                encode_optional(*v, &mut out);
            }
            out
        };
        let (ea, eb) = (enc(ta), enc(tb));
        let mut want = std::cmp::Ordering::Equal;
        for i in 0..ta.len().max(tb.len()) {
            want = match (ta.get(i), tb.get(i)) {
                (Some(p), Some(q)) => spec_cmp_optional(*p, *q),
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            if want != std::cmp::Ordering::Equal {
                break;
            }
        }
        assert_eq!(ea.cmp(&eb), want, "tuple order wrong for {ta:?} vs {tb:?}");
        if a.depth() <= DECODABLE_DEPTH && b.depth() <= DECODABLE_DEPTH {
            let back = decode_tuple(&ea).expect("tuple does not decode");
            assert_eq!(back.len(), ta.len());
            for (p, q) in back.iter().zip(ta) {
                assert_eq!(p.as_ref(), *q);
            }
        }
    }

    // Range `eq a` = [key(a), key(a) ++ 0xFF) holds key(b) ++ key(x) iff a == b.
    let mut end = ka.clone();
    end.push(0xFF);
    let mut kbx = kb.clone();
    encode_optional(Some(&x), &mut kbx);
    let inside = ka <= kbx && kbx < end;
    assert_eq!(
        inside,
        expected == std::cmp::Ordering::Equal,
        "eq range of {a:?} {} (x = {x:?})",
        if inside {
            "holds a different value b"
        } else {
            "misses b == a"
        }
    );
});
