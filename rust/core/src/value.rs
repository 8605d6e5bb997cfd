//! Convex's value model: null, int64, float64, boolean, string, bytes, array, object.
//!
//! Invariants:
//! - [`Value`]'s `Ord` is Convex's total order (the Convex sync protocol's order of values):
//!   type order null < int64 < float64 < boolean < string < bytes < array < object; int64 and
//!   float64 never compare numerically; floats by IEEE 754 `total_cmp` (so -0.0 < +0.0 and
//!   NaN equals itself); strings by UTF-8 bytes; arrays and objects lexicographically with a
//!   prefix first. `keys::encode_value` produces bytes whose memcmp order equals this order.
//! - Objects are `BTreeMap<String, Value>`: keys are unique and iterate in byte order, which
//!   is the order the index-key encoding and the total order need.
//! - Nothing here enforces limits; [`check_value`] does, against [`crate::limits`].

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use crate::limits;

/// An object: field name -> value, iterated in byte order of the names.
pub type Object = BTreeMap<String, Value>;

/// One Convex value.
#[derive(Clone, Debug)]
pub enum Value {
    /// `null` (Python `None`).
    Null,
    /// A signed 64-bit integer (Python `int`).
    Int64(i64),
    /// An IEEE 754 double (Python `float`).
    Float64(f64),
    /// `true` / `false`.
    Boolean(bool),
    /// UTF-8 text.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An ordered list of values.
    Array(Vec<Value>),
    /// A map from field names to values.
    Object(Object),
}

/// The type of a value, in Convex's type order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValueType {
    /// `null`
    Null,
    /// `int64`
    Int64,
    /// `float64`
    Float64,
    /// `boolean`
    Boolean,
    /// `string`
    String,
    /// `bytes`
    Bytes,
    /// `array`
    Array,
    /// `object`
    Object,
}

impl ValueType {
    /// The name Convex's validators use for this type (`"int64"`, `"float64"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Null => "null",
            ValueType::Int64 => "int64",
            ValueType::Float64 => "float64",
            ValueType::Boolean => "boolean",
            ValueType::String => "string",
            ValueType::Bytes => "bytes",
            ValueType::Array => "array",
            ValueType::Object => "object",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Value {
    /// This value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Null => ValueType::Null,
            Value::Int64(_) => ValueType::Int64,
            Value::Float64(_) => ValueType::Float64,
            Value::Boolean(_) => ValueType::Boolean,
            Value::String(_) => ValueType::String,
            Value::Bytes(_) => ValueType::Bytes,
            Value::Array(_) => ValueType::Array,
            Value::Object(_) => ValueType::Object,
        }
    }

    /// Size in bytes as Convex counts it for limits: 1 byte of type tag per value, 8 for a
    /// number, the UTF-8 / byte length plus a terminator for strings and bytes, and for
    /// containers the sum of their parts plus a terminator (field names count as strings).
    pub fn size(&self) -> usize {
        match self {
            Value::Null | Value::Boolean(_) => 1,
            Value::Int64(_) | Value::Float64(_) => 9,
            Value::String(s) => s.len() + 2,
            Value::Bytes(b) => b.len() + 2,
            Value::Array(items) => 2 + items.iter().map(Value::size).sum::<usize>(),
            Value::Object(fields) => object_size(fields),
        }
    }

    /// Nesting depth: 1 for a scalar, 1 + the deepest child for a container.
    pub fn depth(&self) -> usize {
        match self {
            Value::Array(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Object(fields) => 1 + fields.values().map(Value::depth).max().unwrap_or(0),
            _ => 1,
        }
    }

    /// The object's fields, if this is an object.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }
}

/// Size of an object as [`Value::size`] counts it.
pub fn object_size(fields: &Object) -> usize {
    2 + fields
        .iter()
        .map(|(k, v)| k.len() + 1 + v.size())
        .sum::<usize>()
}

/// Compare two floats as Convex does (IEEE 754 total order, NaN by bit pattern).
pub fn cmp_f64(a: f64, b: f64) -> Ordering {
    a.total_cmp(&b)
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Int64(a), Value::Int64(b)) => a.cmp(b),
            (Value::Float64(a), Value::Float64(b)) => cmp_f64(*a, *b),
            (Value::Boolean(a), Value::Boolean(b)) => a.cmp(b),
            (Value::String(a), Value::String(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::Array(a), Value::Array(b)) => a.iter().cmp(b.iter()),
            (Value::Object(a), Value::Object(b)) => a.iter().cmp(b.iter()),
            _ => self.value_type().cmp(&other.value_type()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

/// Compare two optional values where `None` is a missing field (`undefined`), which sorts
/// before every value (spec §12).
pub fn cmp_optional(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

/// A field path such as `author.name`: object field names from the document's top level.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Parse a dotted path (`"a.b"`). Each component must be a non-empty field name.
    pub fn parse(path: &str) -> Result<Self, ValueError> {
        if path.is_empty() {
            return Err(ValueError::InvalidFieldPath {
                path: path.to_owned(),
            });
        }
        let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) {
            return Err(ValueError::InvalidFieldPath {
                path: path.to_owned(),
            });
        }
        Ok(FieldPath(parts))
    }

    /// The components of the path.
    pub fn parts(&self) -> &[String] {
        &self.0
    }

    /// Look the path up in an object; `None` when a component is missing or not an object.
    pub fn lookup<'a>(&self, object: &'a Object) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        let mut current = object.get(first)?;
        for part in rest {
            current = current.as_object()?.get(part)?;
        }
        Some(current)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A value that breaks a rule of the value model or a limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Nesting deeper than the limit.
    #[error(
        "value at {path} is nested more than {limit} levels deep (limit: maximum nesting depth {limit})"
    )]
    TooDeep {
        /// Where the limit was crossed.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// An array longer than the limit.
    #[error("array at {path} has {len} elements (limit: at most {limit} array elements)")]
    ArrayTooLong {
        /// Where.
        path: String,
        /// Actual length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An object with too many fields.
    #[error("object at {path} has {len} fields (limit: at most {limit} fields per object)")]
    TooManyFields {
        /// Where.
        path: String,
        /// Actual number of fields.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A field name that is not allowed.
    #[error("invalid field name {name:?} at {path}: {reason}")]
    InvalidFieldName {
        /// Where.
        path: String,
        /// The name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A field path that cannot be parsed.
    #[error("invalid field path {path:?}: components must be non-empty field names")]
    InvalidFieldPath {
        /// The path.
        path: String,
    },
}

/// Why a field name is refused, or `None` if it is fine (spec §11.2): not starting with `$`,
/// printable ASCII only, at most [`limits::MAX_FIELD_NAME_LEN`] characters.
pub fn field_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > limits::MAX_FIELD_NAME_LEN {
        return Some("field names are at most 1024 characters (limit: field name length)");
    }
    if name.starts_with('$') {
        return Some("field names starting with '$' are reserved");
    }
    if !name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Some("field names must be printable ASCII (0x20-0x7E)");
    }
    None
}

/// Check a value against the value limits (nesting depth, array length, fields per object,
/// field names). `path` names the value in errors (e.g. `"args.body"`).
pub fn check_value(value: &Value, path: &str) -> Result<(), ValueError> {
    check_inner(value, &mut path.to_owned(), 0)
}

/// Check an object's fields as [`check_value`] checks an object value.
pub fn check_object(fields: &Object, path: &str) -> Result<(), ValueError> {
    check_fields(fields, &mut path.to_owned(), 0)
}

fn check_fields(fields: &Object, path: &mut String, depth: usize) -> Result<(), ValueError> {
    if depth >= limits::MAX_VALUE_DEPTH {
        return Err(ValueError::TooDeep {
            path: path.clone(),
            limit: limits::MAX_VALUE_DEPTH,
        });
    }
    if fields.len() > limits::MAX_OBJECT_FIELDS {
        return Err(ValueError::TooManyFields {
            path: path.clone(),
            len: fields.len(),
            limit: limits::MAX_OBJECT_FIELDS,
        });
    }
    for (name, item) in fields {
        if let Some(reason) = field_name_problem(name) {
            return Err(ValueError::InvalidFieldName {
                path: path.clone(),
                name: name.clone(),
                reason,
            });
        }
        let len = path.len();
        path.push('.');
        path.push_str(name);
        check_inner(item, path, depth + 1)?;
        path.truncate(len);
    }
    Ok(())
}

/// `depth` is the number of containers enclosing `value`; a container at depth
/// [`limits::MAX_VALUE_DEPTH`] (i.e. the 65th level of nesting) is refused.
fn check_inner(value: &Value, path: &mut String, depth: usize) -> Result<(), ValueError> {
    if matches!(value, Value::Array(_) | Value::Object(_)) && depth >= limits::MAX_VALUE_DEPTH {
        return Err(ValueError::TooDeep {
            path: path.clone(),
            limit: limits::MAX_VALUE_DEPTH,
        });
    }
    match value {
        Value::Array(items) => {
            if items.len() > limits::MAX_ARRAY_LEN {
                return Err(ValueError::ArrayTooLong {
                    path: path.clone(),
                    len: items.len(),
                    limit: limits::MAX_ARRAY_LEN,
                });
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                check_inner(item, path, depth + 1)?;
                path.truncate(len);
            }
        }
        Value::Object(fields) => check_fields(fields, path, depth)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_order_and_numbers() {
        let ordered = [
            Value::Null,
            Value::Int64(i64::MIN),
            Value::Int64(100),
            Value::Float64(f64::NEG_INFINITY),
            Value::Float64(-0.0),
            Value::Float64(0.0),
            Value::Float64(0.5),
            Value::Boolean(false),
            Value::Boolean(true),
            Value::String(String::new()),
            Value::String("a".into()),
            Value::Bytes(vec![]),
            Value::Array(vec![]),
            Value::Object(Object::new()),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
        assert_eq!(Value::Float64(f64::NAN), Value::Float64(f64::NAN));
    }

    #[test]
    fn limits_are_named() {
        let mut v = Value::Null;
        for _ in 0..limits::MAX_VALUE_DEPTH {
            v = Value::Array(vec![v]);
        }
        check_value(&v, "doc").unwrap();
        let v = Value::Array(vec![v]);
        let err = check_value(&v, "doc").unwrap_err();
        assert!(err.to_string().contains("nesting depth"), "{err}");
        let err = check_value(&Value::Array(vec![Value::Null; 8193]), "doc").unwrap_err();
        assert!(err.to_string().contains("8192"), "{err}");
        let mut o = Object::new();
        o.insert("$bad".into(), Value::Null);
        assert!(check_value(&Value::Object(o), "doc").is_err());
    }

    #[test]
    fn field_paths() {
        let mut inner = Object::new();
        inner.insert("b".into(), Value::Int64(1));
        let mut o = Object::new();
        o.insert("a".into(), Value::Object(inner));
        assert_eq!(
            FieldPath::parse("a.b").unwrap().lookup(&o),
            Some(&Value::Int64(1))
        );
        assert_eq!(FieldPath::parse("a.c").unwrap().lookup(&o), None);
        assert!(FieldPath::parse("a..b").is_err());
    }
}
