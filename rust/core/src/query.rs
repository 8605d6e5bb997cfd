//! Index range expressions (`with_index(name, lambda q: q.eq(...).gt(...))`) and cursor
//! positions, turned into keyspace intervals.
//!
//! Rules, as Convex's `IndexRangeBuilder`: zero or more `eq` on the index's fields in order
//! from the first, then at most one lower bound (`gt`/`gte`) and at most one upper bound
//! (`lt`/`lte`), both on the next field. The fields `_creationTime` and `_id` that end every
//! index may be used like any other.
//!
//! Invariants: the interval of a range is exactly the keys whose values satisfy it, because
//! keys are tuples of self-delimiting encodings and the byte after a whole value is a type
//! tag (at most 0x15): `eq` values `P` cover `[P, P ++ 0xFF)`; `gte v` starts at
//! `P ++ enc(v)`, `gt v` at `P ++ enc(v) ++ 0xFF`; the upper bounds mirror them.

use crate::catalog::IndexDescriptor;
use crate::error::{Error, Result};
use crate::interval::Interval;
use crate::keys;
use crate::value::Value;

/// One operation of a range expression.
#[derive(Clone, Debug, PartialEq)]
pub enum RangeOp {
    /// `field == value`
    Eq(String, Value),
    /// `field > value`
    Gt(String, Value),
    /// `field >= value`
    Gte(String, Value),
    /// `field < value`
    Lt(String, Value),
    /// `field <= value`
    Lte(String, Value),
}

impl RangeOp {
    fn field(&self) -> &str {
        match self {
            RangeOp::Eq(f, _)
            | RangeOp::Gt(f, _)
            | RangeOp::Gte(f, _)
            | RangeOp::Lt(f, _)
            | RangeOp::Lte(f, _) => f,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            RangeOp::Eq(..) => "eq",
            RangeOp::Gt(..) => "gt",
            RangeOp::Gte(..) => "gte",
            RangeOp::Lt(..) => "lt",
            RangeOp::Lte(..) => "lte",
        }
    }
}

fn index_label(index: &IndexDescriptor, table: &str) -> String {
    let fields: Vec<String> = index.key_fields.iter().map(ToString::to_string).collect();
    format!("{table}.{} [{}]", index.name, fields.join(", "))
}

/// The keyspace interval of a range expression on `index` (of table `table`, for messages).
pub fn index_range(index: &IndexDescriptor, table: &str, ops: &[RangeOp]) -> Result<Interval> {
    let mut prefix = index.id.prefix().to_vec();
    let fields = &index.key_fields;
    let mut position = 0;
    let mut lower: Option<(&Value, bool)> = None;
    let mut upper: Option<(&Value, bool)> = None;
    let mut bound_field: Option<&str> = None;
    let bad = |msg: String| Error::InvalidArgument(msg);
    for op in ops {
        let expected = fields.get(position).map(ToString::to_string);
        match op {
            RangeOp::Eq(field, value) => {
                if bound_field.is_some() {
                    return Err(bad(format!(
                        "index range on {}: eq({field:?}) after a range bound; eq must come \
                         first, on the index's fields in order",
                        index_label(index, table)
                    )));
                }
                if expected.as_deref() != Some(field.as_str()) {
                    return Err(bad(format!(
                        "index range on {}: eq({field:?}) is out of order; the next field is {}",
                        index_label(index, table),
                        expected
                            .map_or_else(|| "none (all fields used)".into(), |f| format!("{f:?}"))
                    )));
                }
                keys::encode_value(value, &mut prefix);
                position += 1;
            }
            RangeOp::Gt(field, value)
            | RangeOp::Gte(field, value)
            | RangeOp::Lt(field, value)
            | RangeOp::Lte(field, value) => {
                match bound_field {
                    Some(f) if f != field => {
                        return Err(bad(format!(
                            "index range on {}: {}({field:?}) bounds another field than the \
                             earlier bound on {f:?}",
                            index_label(index, table),
                            op.name()
                        )));
                    }
                    None if expected.as_deref() != Some(field.as_str()) => {
                        return Err(bad(format!(
                            "index range on {}: {}({field:?}) is out of order; the next field \
                             is {}",
                            index_label(index, table),
                            op.name(),
                            expected.map_or_else(
                                || "none (all fields used)".into(),
                                |f| format!("{f:?}")
                            )
                        )));
                    }
                    _ => {}
                }
                bound_field = Some(op.field());
                let is_lower = matches!(op, RangeOp::Gt(..) | RangeOp::Gte(..));
                let slot = if is_lower { &mut lower } else { &mut upper };
                if slot.is_some() {
                    return Err(bad(format!(
                        "index range on {}: two {} bounds on {field:?}",
                        index_label(index, table),
                        if is_lower { "lower" } else { "upper" }
                    )));
                }
                *slot = Some((value, matches!(op, RangeOp::Gte(..) | RangeOp::Lte(..))));
            }
        }
    }
    // After whole values, the next byte of a key is a tag (<= 0x15), so `values ++ 0xFF`
    // is above every key that starts with exactly these values -- and below a key whose
    // next value merely extends the last one's bytes ("a" vs "a\0" = 0x10 61 00 vs
    // 0x10 61 00 FF 00), which `prefix_successor` would wrongly include.
    let after_values = |mut k: Vec<u8>| {
        k.push(0xFF);
        k
    };
    let start = match lower {
        None => prefix.clone(),
        Some((v, inclusive)) => {
            let mut k = prefix.clone();
            keys::encode_value(v, &mut k);
            if inclusive { k } else { after_values(k) }
        }
    };
    let end = match upper {
        None if position == 0 => keys::prefix_successor(&prefix),
        None => Some(after_values(prefix.clone())),
        Some((v, inclusive)) => {
            let mut k = prefix.clone();
            keys::encode_value(v, &mut k);
            Some(if inclusive { after_values(k) } else { k })
        }
    };
    let end = end.ok_or_else(|| bad("index range has no upper end".into()))?;
    Ok(Interval::new(start.clone(), end).unwrap_or(Interval {
        start: start.clone(),
        end: start,
    }))
}

/// Narrow a scan interval to what comes after cursor position `after` and up to position
/// `until` (inclusive), both keyspace keys, in the scan direction.
pub fn narrow(
    interval: &Interval,
    after: Option<&[u8]>,
    until: Option<&[u8]>,
    descending: bool,
) -> Interval {
    let mut start = interval.start.clone();
    let mut end = interval.end.clone();
    if descending {
        if let Some(a) = after {
            end = end.min(a.to_vec());
        }
        if let Some(u) = until {
            start = start.max(u.to_vec());
        }
    } else {
        if let Some(a) = after {
            start = start.max(keys::successor(a));
        }
        if let Some(u) = until {
            end = end.min(keys::successor(u));
        }
    }
    if start > end {
        end.clone_from(&start);
    }
    Interval { start, end }
}

/// Whether the interval holds no key.
pub fn is_empty(interval: &Interval) -> bool {
    interval.start >= interval.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, IndexState};

    fn index() -> (Catalog, IndexDescriptor) {
        let mut c = Catalog::new();
        c.add_table("t", 0).unwrap();
        c.add_index(
            "t",
            "by_ab",
            vec!["a".into(), "b".into()],
            IndexState::Backfilling,
        )
        .unwrap();
        let t = c.table("t").unwrap().clone();
        let d = c.index_by_name(&t, "by_ab").unwrap().clone();
        (c, d)
    }

    fn key(d: &IndexDescriptor, a: i64, b: i64) -> Vec<u8> {
        let mut k = d.id.prefix().to_vec();
        keys::encode_value(&Value::Int64(a), &mut k);
        keys::encode_value(&Value::Int64(b), &mut k);
        keys::encode_value(&Value::Float64(1.0), &mut k);
        keys::encode_value(&Value::String("id".into()), &mut k);
        k
    }

    #[test]
    fn ranges_hold_exactly_their_keys() {
        let (_, d) = index();
        let r = index_range(
            &d,
            "t",
            &[
                RangeOp::Eq("a".into(), Value::Int64(1)),
                RangeOp::Gt("b".into(), Value::Int64(5)),
            ],
        )
        .unwrap();
        assert!(!r.contains(&key(&d, 1, 5)));
        assert!(r.contains(&key(&d, 1, 6)));
        assert!(!r.contains(&key(&d, 2, 6)));
        let r = index_range(
            &d,
            "t",
            &[
                RangeOp::Eq("a".into(), Value::Int64(1)),
                RangeOp::Gte("b".into(), Value::Int64(5)),
                RangeOp::Lte("b".into(), Value::Int64(7)),
            ],
        )
        .unwrap();
        assert!(r.contains(&key(&d, 1, 5)) && r.contains(&key(&d, 1, 7)));
        assert!(!r.contains(&key(&d, 1, 8)) && !r.contains(&key(&d, 1, 4)));
    }

    #[test]
    fn string_prefixes_are_distinct_values() {
        let (_, d) = index();
        let key_s = |a: &str| {
            let mut k = d.id.prefix().to_vec();
            keys::encode_value(&Value::String(a.into()), &mut k);
            keys::encode_value(&Value::Int64(1), &mut k);
            k
        };
        let eq = index_range(
            &d,
            "t",
            &[RangeOp::Eq("a".into(), Value::String("a".into()))],
        )
        .unwrap();
        assert!(eq.contains(&key_s("a")));
        assert!(!eq.contains(&key_s("a\0")));
        let gt = index_range(
            &d,
            "t",
            &[RangeOp::Gt("a".into(), Value::String("a".into()))],
        )
        .unwrap();
        assert!(gt.contains(&key_s("a\0")) && !gt.contains(&key_s("a")));
        let lte = index_range(
            &d,
            "t",
            &[RangeOp::Lte("a".into(), Value::String("a".into()))],
        )
        .unwrap();
        assert!(lte.contains(&key_s("a")) && !lte.contains(&key_s("a\0")));
    }

    #[test]
    fn out_of_order_fields_are_refused() {
        let (_, d) = index();
        let err = index_range(&d, "t", &[RangeOp::Eq("b".into(), Value::Int64(1))]).unwrap_err();
        assert!(err.to_string().contains("next field is \"a\""), "{err}");
        let err = index_range(
            &d,
            "t",
            &[
                RangeOp::Gt("a".into(), Value::Int64(1)),
                RangeOp::Eq("b".into(), Value::Int64(1)),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("after a range bound"), "{err}");
    }
}
