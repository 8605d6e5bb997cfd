//! Filter expressions of queries (`.filter(lambda q: ...)`), evaluated against documents.
//!
//! The semantics are Convex's `FilterBuilder`: comparisons use the total value order of
//! [`crate::value`] with a missing field (`undefined`) below everything; `and`/`or`/`not`
//! work on booleans; arithmetic works on two numbers of the same type. A document passes
//! when the expression evaluates to `true`, and nothing else.
//!
//! Invariants: evaluation is pure and never panics; expressions are bounded in depth by
//! [`MAX_EXPRESSION_DEPTH`] when built.

use std::cmp::Ordering;

use crate::document::FieldSource;
use crate::error::{Error, Result};
use crate::value::{FieldPath, Value, cmp_optional};

/// Deepest expression tree accepted.
pub const MAX_EXPRESSION_DEPTH: usize = 64;

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// `==`
    Eq,
    /// `!=`
    Neq,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `>`
    Gt,
    /// `>=`
    Gte,
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arithmetic {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
}

/// A filter expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A document field (possibly nested); `undefined` if missing.
    Field(FieldPath),
    /// A constant.
    Literal(Value),
    /// Compare two expressions.
    Compare(Comparison, Box<Expr>, Box<Expr>),
    /// All true (an empty list is true).
    And(Vec<Expr>),
    /// Any true (an empty list is false).
    Or(Vec<Expr>),
    /// Negation of a boolean.
    Not(Box<Expr>),
    /// Arithmetic on two numbers.
    Arith(Arithmetic, Box<Expr>, Box<Expr>),
    /// Negation of a number.
    Neg(Box<Expr>),
}

impl Expr {
    /// The depth of the tree (1 for a leaf).
    pub fn depth(&self) -> usize {
        match self {
            Expr::Field(_) | Expr::Literal(_) => 1,
            Expr::Compare(_, a, b) | Expr::Arith(_, a, b) => 1 + a.depth().max(b.depth()),
            Expr::And(xs) | Expr::Or(xs) => 1 + xs.iter().map(Expr::depth).max().unwrap_or(0),
            Expr::Not(x) | Expr::Neg(x) => 1 + x.depth(),
        }
    }

    /// Check the tree is not deeper than the limit.
    pub fn validate(&self) -> Result<()> {
        if self.depth() > MAX_EXPRESSION_DEPTH {
            return Err(Error::InvalidArgument(format!(
                "filter expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep"
            )));
        }
        Ok(())
    }

    /// Evaluate against a document's fields; `None` is `undefined`.
    pub fn eval<S: FieldSource + ?Sized>(&self, doc: &S) -> Result<Option<Value>> {
        Ok(match self {
            Expr::Field(path) => doc.field(path),
            Expr::Literal(v) => Some(v.clone()),
            Expr::Compare(op, a, b) => {
                let (a, b) = (a.eval(doc)?, b.eval(doc)?);
                let ord = cmp_optional(a.as_ref(), b.as_ref());
                let result = match op {
                    Comparison::Eq => ord == Ordering::Equal,
                    Comparison::Neq => ord != Ordering::Equal,
                    Comparison::Lt => ord == Ordering::Less,
                    Comparison::Lte => ord != Ordering::Greater,
                    Comparison::Gt => ord == Ordering::Greater,
                    Comparison::Gte => ord != Ordering::Less,
                };
                Some(Value::Boolean(result))
            }
            Expr::And(xs) => {
                for x in xs {
                    if !truthy("and", x.eval(doc)?)? {
                        return Ok(Some(Value::Boolean(false)));
                    }
                }
                Some(Value::Boolean(true))
            }
            Expr::Or(xs) => {
                for x in xs {
                    if truthy("or", x.eval(doc)?)? {
                        return Ok(Some(Value::Boolean(true)));
                    }
                }
                Some(Value::Boolean(false))
            }
            Expr::Not(x) => Some(Value::Boolean(!truthy("not", x.eval(doc)?)?)),
            Expr::Arith(op, a, b) => arith(*op, a.eval(doc)?, b.eval(doc)?)?,
            Expr::Neg(x) => match x.eval(doc)? {
                Some(Value::Int64(i)) => Some(Value::Int64(i.wrapping_neg())),
                Some(Value::Float64(f)) => Some(Value::Float64(-f)),
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "filter: neg needs a number, found {}",
                        type_name(other.as_ref())
                    )));
                }
            },
        })
    }

    /// Whether a document passes: the expression evaluates to `true`.
    pub fn matches<S: FieldSource + ?Sized>(&self, doc: &S) -> Result<bool> {
        Ok(matches!(self.eval(doc)?, Some(Value::Boolean(true))))
    }
}

fn type_name(v: Option<&Value>) -> &'static str {
    v.map_or("undefined", |v| v.value_type().name())
}

fn truthy(op: &str, v: Option<Value>) -> Result<bool> {
    match v {
        Some(Value::Boolean(b)) => Ok(b),
        other => Err(Error::InvalidArgument(format!(
            "filter: {op} needs booleans, found {}",
            type_name(other.as_ref())
        ))),
    }
}

fn arith(op: Arithmetic, a: Option<Value>, b: Option<Value>) -> Result<Option<Value>> {
    Ok(Some(match (a, b) {
        (Some(Value::Int64(x)), Some(Value::Int64(y))) => Value::Int64(match op {
            Arithmetic::Add => x.wrapping_add(y),
            Arithmetic::Sub => x.wrapping_sub(y),
            Arithmetic::Mul => x.wrapping_mul(y),
            Arithmetic::Div | Arithmetic::Mod if y == 0 => {
                return Err(Error::InvalidArgument(
                    "filter: int64 division by zero".into(),
                ));
            }
            Arithmetic::Div => x.wrapping_div(y),
            Arithmetic::Mod => x.wrapping_rem(y),
        }),
        (Some(Value::Float64(x)), Some(Value::Float64(y))) => Value::Float64(match op {
            Arithmetic::Add => x + y,
            Arithmetic::Sub => x - y,
            Arithmetic::Mul => x * y,
            Arithmetic::Div => x / y,
            Arithmetic::Mod => x % y,
        }),
        (a, b) => {
            return Err(Error::InvalidArgument(format!(
                "filter: arithmetic needs two numbers of one type, found {} and {}",
                type_name(a.as_ref()),
                type_name(b.as_ref())
            )));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Object;

    fn field(name: &str) -> Expr {
        Expr::Field(FieldPath::parse(name).unwrap())
    }

    fn lit(v: Value) -> Expr {
        Expr::Literal(v)
    }

    #[test]
    fn comparisons_use_the_total_order() {
        let mut doc = Object::new();
        doc.insert("n".into(), Value::Int64(3));
        let gt = Expr::Compare(
            Comparison::Gt,
            Box::new(field("n")),
            Box::new(lit(Value::Int64(2))),
        );
        assert!(gt.matches(&doc).unwrap());
        // int64 sorts below every float64.
        let lt_float = Expr::Compare(
            Comparison::Lt,
            Box::new(field("n")),
            Box::new(lit(Value::Float64(0.5))),
        );
        assert!(lt_float.matches(&doc).unwrap());
        // A missing field is undefined: below null, equal only to undefined.
        let missing_eq_null = Expr::Compare(
            Comparison::Eq,
            Box::new(field("m")),
            Box::new(lit(Value::Null)),
        );
        assert!(!missing_eq_null.matches(&doc).unwrap());
        let and = Expr::And(vec![gt.clone(), Expr::Not(Box::new(missing_eq_null))]);
        assert!(and.matches(&doc).unwrap());
        let sum = Expr::Compare(
            Comparison::Eq,
            Box::new(Expr::Arith(
                Arithmetic::Add,
                Box::new(field("n")),
                Box::new(lit(Value::Int64(1))),
            )),
            Box::new(lit(Value::Int64(4))),
        );
        assert!(sum.matches(&doc).unwrap());
        assert!(Expr::Not(Box::new(field("n"))).matches(&doc).is_err());
    }
}
