"""Property tests (hypothesis) of values, index keys and validators, against models written
from the contract rather than from the code.

* Values: every Convex value (null, int64, float64 with NaN payloads and -0.0, boolean,
  string, bytes, arrays, objects) survives Convex JSON (``_core.convex_json`` →
  ``json.loads`` → ``_core.from_convex_json``) bit for bit; any JSON that is not a valid
  Convex value is refused with ``InvalidValueError`` (never another exception).
* Index keys: ``_core.index_key(a) < _core.index_key(b)`` exactly when ``a < b`` in the
  total order of spec §12 (compared by :func:`compare`, a direct transcription of §12), and
  equal keys exactly for equal values.
* Validators: a random validator (every ``v.*`` builder, nested) and a random value (often
  shaped to match it) are checked by ``Validator.check`` and by :func:`model_check`, a
  model of the validator contract; they agree on acceptance and on the converted
  value, and a refusal is always a ``ValidationFailure`` naming a path.

Source: Convex JSON and Convex's value order (index keys: docs/design/index-keys.md);
README (validators).
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reactive import _core, v
from reactive.errors import InvalidValueError
from reactive.schema import ValidationFailure, Validator
from reactive.values import Int64

INT64 = (-(2**63), 2**63 - 1)

# -- values ----------------------------------------------------------------------------


def floats() -> st.SearchStrategy[float]:
    """Every float64, NaN payloads and signs included."""
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, math.inf, -math.inf]),
        st.integers(0, 2**64 - 1).map(lambda b: struct.unpack("<d", struct.pack("<Q", b))[0]),
    )


field_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
scalars = st.one_of(
    st.none(),
    st.integers(*INT64),
    floats(),
    st.booleans(),
    st.text(max_size=8),
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(field_names, inner, max_size=4),
    ),
    max_leaves=12,
)


def _kind(x: Any) -> type:
    return int if type(x) is Int64 else type(x)


def same(a: Any, b: Any) -> bool:
    """Equal as Convex values: type-strict (an ``Int64`` is an int64 as an ``int`` is),
    floats by bit pattern."""
    if _kind(a) is not _kind(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(values)
@settings(max_examples=500)
def test_values_survive_convex_json(value: Any) -> None:
    text = _core.convex_json(value)
    back = _core.from_convex_json(json.loads(text))
    assert same(back, value), (value, text, back)


json_like = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=6),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["$integer", "$float", "$bytes", "$set", "$", "", "a"]),
                st.text(max_size=4),
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


@given(json_like)
@settings(max_examples=500)
def test_any_json_decodes_or_is_refused_cleanly(obj: Any) -> None:
    try:
        value = _core.from_convex_json(obj)
    except InvalidValueError as exc:
        assert str(exc)
    else:
        # What decodes is a value: it encodes again and round-trips.
        assert same(_core.from_convex_json(json.loads(_core.convex_json(value))), value)


# -- index keys ------------------------------------------------------------------------

TYPE_RANK = {type(None): 1, int: 2, float: 3, bool: 4, str: 5, bytes: 6, list: 7, dict: 8}


def _float_key(x: float) -> int:
    """IEEE 754 total order (Rust's ``f64::total_cmp``) as an integer."""
    bits = struct.unpack("<q", struct.pack("<d", x))[0]
    return bits ^ ((bits >> 63) & 0x7FFF_FFFF_FFFF_FFFF)


def _cmp(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def compare(a: Any, b: Any) -> int:
    """Spec §12: null < int64 < float64 < boolean < string < bytes < array < object."""
    ra, rb = TYPE_RANK[type(a)], TYPE_RANK[type(b)]
    if ra != rb:
        return _cmp(ra, rb)
    if a is None:
        return 0
    if isinstance(a, float):
        return _cmp(_float_key(a), _float_key(b))
    if isinstance(a, str):
        return _cmp(a.encode(), b.encode())
    if isinstance(a, list):
        for x, y in zip(a, b, strict=False):
            c = compare(x, y)
            if c:
                return c
        return _cmp(len(a), len(b))
    if isinstance(a, dict):
        for (ka, va), (kb, vb) in zip(sorted(a.items()), sorted(b.items()), strict=False):
            c = _cmp(ka.encode(), kb.encode()) or compare(va, vb)
            if c:
                return c
        return _cmp(len(a), len(b))
    return _cmp(a, b)


@given(values, values)
@settings(max_examples=1000)
def test_index_key_order_is_the_value_order(a: Any, b: Any) -> None:
    ka, kb = _core.index_key(a), _core.index_key(b)
    assert _cmp(ka, kb) == compare(a, b), (a, b, ka.hex(), kb.hex())
    assert (ka == kb) == same(a, b)


@given(st.lists(values, min_size=2, max_size=8))
def test_sorting_by_index_key_sorts_by_value(items: list[Any]) -> None:
    by_key = sorted(items, key=_core.index_key)
    for x, y in itertools.pairwise(by_key):
        assert compare(x, y) <= 0, (x, y)


# -- validators ------------------------------------------------------------------------

# A validator spec: a tuple the model reads, and from which the validator is built.
Spec = tuple[Any, ...]

leaf_specs = st.sampled_from(
    [("string",), ("float64",), ("int64",), ("boolean",), ("null",), ("bytes",), ("any",)]
) | st.builds(
    lambda x: ("literal", x),
    st.one_of(st.text(max_size=3), st.integers(-3, 3), st.booleans()),
)


def _compound(inner: st.SearchStrategy[Spec]) -> st.SearchStrategy[Spec]:
    return st.one_of(
        inner.map(lambda s: ("array", s)),
        st.dictionaries(field_names, st.tuples(inner, st.booleans()), max_size=3).map(
            lambda fields: ("object", fields)
        ),
        inner.map(lambda s: ("record", s)),
        st.lists(inner, min_size=1, max_size=3).map(lambda members: ("union", members)),
        # Unions of overlapping scalar types, where the order of members matters.
        st.lists(
            st.sampled_from([("float64",), ("int64",), ("any",), ("string",)]),
            min_size=2,
            max_size=3,
        ).map(lambda members: ("union", members)),
    )


specs = st.recursive(leaf_specs, _compound, max_leaves=6)


def build(spec: Spec) -> Validator:
    kind = spec[0]
    simple = {
        "string": v.string,
        "float64": v.float64,
        "int64": v.int64,
        "boolean": v.boolean,
        "null": v.null,
        "bytes": v.bytes,
        "any": v.any,
    }
    if kind in simple:
        return simple[kind]()
    if kind == "literal":
        return v.literal(spec[1])
    if kind == "array":
        return v.array(build(spec[1]))
    if kind == "object":
        return v.object(
            {n: (v.optional(build(s)) if opt else build(s)) for n, (s, opt) in spec[1].items()}
        )
    if kind == "record":
        return v.record(v.string(), build(spec[1]))
    if kind == "union":
        return v.union(*(build(s) for s in spec[1]))
    raise AssertionError(spec)


class Refused(Exception):
    pass


def model_check(spec: Spec, value: Any, coerce: bool = True) -> Any:
    """The contract: exact Python types per Convex type (``bool`` is not an int64, ``int`` is
    not a float64 except that a float64 accepts an ``int`` and converts it); objects have
    every required field and no other; a union takes the first member that accepts the
    value unconverted, else the first that accepts it converted."""
    kind = spec[0]
    exact = {"string": str, "boolean": bool, "null": type(None), "bytes": bytes}
    if kind in exact:
        if type(value) is exact[kind]:
            return value
        raise Refused
    if kind == "any":
        return value
    if kind == "int64":
        if type(value) is int and INT64[0] <= value <= INT64[1]:
            return value
        raise Refused
    if kind == "float64":
        if type(value) is float:
            return value
        if coerce and type(value) is int and math.isfinite(float(value)):
            return float(value)
        raise Refused
    if kind == "literal":
        if type(value) is type(spec[1]) and value == spec[1]:
            return value
        raise Refused
    if kind == "array":
        if type(value) is not list:
            raise Refused
        return [model_check(spec[1], x, coerce) for x in value]
    if kind == "object":
        if type(value) is not dict or set(value) - set(spec[1]):
            raise Refused
        out = {}
        for name, (s, optional) in spec[1].items():
            if name in value:
                out[name] = model_check(s, value[name], coerce)
            elif not optional:
                raise Refused
        return out
    if kind == "record":
        if type(value) is not dict:
            raise Refused
        return {k: model_check(spec[1], x, coerce) for k, x in value.items()}
    if kind == "union":
        for strict in (True, False) if coerce else (True,):
            for member in spec[1]:
                try:
                    return model_check(member, value, not strict)
                except Refused:
                    continue
        raise Refused
    raise AssertionError(spec)


@st.composite
def value_for(draw: st.DrawFn, spec: Spec) -> Any:
    """A value shaped like ``spec`` (often matching it, sometimes off by a little)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    kind = spec[0]
    if kind == "string":
        return draw(st.text(max_size=4))
    if kind == "float64":
        return draw(st.one_of(floats(), st.integers(*INT64)))
    if kind == "int64":
        return draw(st.integers(*INT64))
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "null":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=4))
    if kind == "any":
        return draw(values)
    if kind == "literal":
        return spec[1] if draw(st.booleans()) else draw(scalars)
    if kind == "array":
        return [draw(value_for(spec[1])) for _ in range(draw(st.integers(0, 3)))]
    if kind == "object":
        out = {}
        for name, (s, optional) in spec[1].items():
            if not (optional and draw(st.booleans())) and draw(st.integers(0, 15)):
                out[name] = draw(value_for(s))
        if draw(st.integers(0, 7)) == 0:
            out[draw(field_names)] = draw(scalars)
        return out
    if kind == "record":
        keys = draw(st.lists(field_names, max_size=3, unique=True))
        return {k: draw(value_for(spec[1])) for k in keys}
    if kind == "union":
        return draw(value_for(draw(st.sampled_from(spec[1]))))
    raise AssertionError(spec)


@given(st.data())
@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
def test_validators_follow_the_contract(data: st.DataObject) -> None:
    spec = data.draw(specs, label="spec")
    validator = build(spec)
    value = data.draw(value_for(spec), label="value")
    try:
        want = model_check(spec, value)
    except Refused:
        want = Refused
    try:
        got = validator.check(value)
    except ValidationFailure as failure:
        assert want is Refused, f"{validator!r} refused {value!r} ({failure}), model: {want!r}"
        assert str(failure)
    else:
        assert want is not Refused, f"{validator!r} accepted {value!r} as {got!r}"
        assert same(got, want), (validator, value, got, want)
    # Every validator describes itself and has Convex's JSON form.
    assert validator.describe()
    assert json.dumps(validator.to_json())


def test_a_union_keeps_an_int_an_int64() -> None:
    """Found by the property above: the first member that accepted an ``int`` won, so
    ``v.union(v.float64(), v.int64())`` turned ``5`` into ``5.0``."""
    assert type(v.union(v.float64(), v.int64()).check(5)) is Int64
    assert type(v.union(v.float64(), v.string()).check(5)) is float
    nested = v.union(v.object({"a": v.float64()}), v.object({"a": v.int64()}))
    assert type(nested.check({"a": 3})["a"]) is Int64


@given(st.integers())
def test_int64_range(n: int) -> None:
    assume(n is not None)
    try:
        v.int64().check(n)
    except ValidationFailure:
        assert not INT64[0] <= n <= INT64[1]
    else:
        assert INT64[0] <= n <= INT64[1]
