"""Wire encodings: timestamps (spec §3, §10) and Convex JSON values (spec §11)."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactive import _core
from reactive.errors import InvalidValueError
from reactive.sync.messages import ProtocolError, decode_ts, encode_ts
from reactive.values import Int64

# -- timestamps ----------------------------------------------------------------------------

TS_VECTORS = [
    (0, "AAAAAAAAAAA="),
    (1700000000000000000, "AAAqNv6clxc="),
    (1700000000123456789, "Fc2FPf6clxc="),
    (1700000000200000000, "AMIVQv6clxc="),
]


@pytest.mark.parametrize(("ns", "text"), TS_VECTORS)
def test_ts_vectors(ns: int, text: str) -> None:
    assert encode_ts(ns) == text
    assert decode_ts(text) == ns


def test_ts_is_little_endian_u64() -> None:
    assert encode_ts(1) == base64.b64encode(b"\x01" + b"\x00" * 7).decode()
    assert encode_ts(2**64 - 1) == "//////////8="
    assert decode_ts("//////////8=") == 2**64 - 1
    assert len(encode_ts(2**63)) % 4 == 0


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_ts_round_trip(ns: int) -> None:
    text = encode_ts(ns)
    assert len(text) == 12 and text.endswith("=")
    assert decode_ts(text) == ns


@pytest.mark.parametrize(
    "bad",
    [
        None,
        0,
        1.5,
        ["AAAAAAAAAAA="],
        {"ts": "AAAAAAAAAAA="},
        "",
        "AAAA",  # 3 bytes
        "AAAAAAAAAAAAAAAA",  # 12 bytes
        "AAAAAAAAAAA",  # padding missing
        "AAAAAAAA AAA=",  # not base64
        "!!!!!!!!!!!=",
        "AAAAAAAAAAA=AAAA",
    ],
)
def test_decode_ts_refuses(bad: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_ts(bad, "endVersion.ts")
    assert "endVersion.ts" in str(info.value)


# -- Convex JSON -----------------------------------------------------------------------------

VALUE_VECTORS: list[tuple[Any, Any]] = [
    (1, {"$integer": "AQAAAAAAAAA="}),
    (-1, {"$integer": "//////////8="}),
    (42, {"$integer": "KgAAAAAAAAA="}),
    (float("inf"), {"$float": "AAAAAAAA8H8="}),
    (float("-inf"), {"$float": "AAAAAAAA8P8="}),
    (-0.0, {"$float": "AAAAAAAAAIA="}),
    (b"hello", {"$bytes": "aGVsbG8="}),
    (None, None),
    (True, True),
    (False, False),
    ("text", "text"),
    (1.5, 1.5),
    (0.0, 0.0),
    ([1.0, "a"], [1.0, "a"]),
    ({"a": {"b": [None]}}, {"a": {"b": [None]}}),
]


def _kind(x: Any) -> type:
    return int if type(x) is Int64 else type(x)


def same(a: Any, b: Any) -> bool:
    """Exact equality of Convex values: int is not float (an Int64 is an int64 as an int
    is), -0.0 is not 0.0, NaN is NaN."""
    if _kind(a) is not _kind(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.parametrize(("value", "encoded"), VALUE_VECTORS)
def test_convex_json_vectors(value: Any, encoded: Any) -> None:
    assert json.loads(_core.convex_json(value)) == encoded
    assert same(_core.from_convex_json(encoded), value)


def test_nan_vector() -> None:
    assert json.loads(_core.convex_json(float("nan"))) == {"$float": "AAAAAAAA+H8="}
    decoded = _core.from_convex_json({"$float": "AAAAAAAA+H8="})
    assert isinstance(decoded, float) and math.isnan(decoded)


def test_int64_bounds() -> None:
    assert json.loads(_core.convex_json(2**63 - 1)) == {"$integer": "/////////38="}
    assert json.loads(_core.convex_json(-(2**63))) == {"$integer": "AAAAAAAAAIA="}
    for out_of_range in (2**63, -(2**63) - 1):
        with pytest.raises(InvalidValueError):
            _core.convex_json(out_of_range)


@pytest.mark.parametrize("text", ["5", "5.0", "5e0", "-0", "1e300"])
def test_json_numbers_decode_as_float(text: str) -> None:
    decoded = _core.from_convex_json(json.loads(text))
    assert type(decoded) is float
    assert decoded == float(text)
    nested = _core.from_convex_json(json.loads(f'{{"n": [{text}]}}'))
    assert type(nested["n"][0]) is float


def _f64(x: float) -> str:
    return base64.b64encode(struct.pack("<d", x)).decode()


@pytest.mark.parametrize(
    "bad",
    [
        {"$float": _f64(1.5)},  # an ordinary number must be a JSON number
        {"$float": _f64(0.0)},  # +0.0 too
        {"$float": "AAAA"},  # not 8 bytes
        {"$float": 1.5},
        {"$integer": "AQAAAAAAAA=="},  # 7 bytes
        {"$integer": "AQAAAAAAAAAA"},  # 9 bytes
        {"$integer": 1},
        {"$integer": "not base64!"},
        {"$bytes": 5},
        {"$bytes": "***"},
        {"$set": []},
        {"$map": []},
        {"$foo": 1},
        {"a": {"$foo": 1}},
        [{"$weird": None}],
        {"$integer": "AQAAAAAAAAA=", "extra": 1},  # special keys stand alone
    ],
)
def test_from_convex_json_refuses(bad: Any) -> None:
    with pytest.raises(InvalidValueError) as info:
        _core.from_convex_json(bad, "args")
    assert str(info.value)


def test_clean_format() -> None:
    def clean(v: Any) -> Any:
        return json.loads(_core.convex_json(v, True))

    assert clean(42) == "42"
    assert clean(-(2**63)) == "-9223372036854775808"
    assert clean(b"hello") == "aGVsbG8="
    assert clean(float("nan")) == "NaN"
    assert clean(float("inf")) == "Infinity"
    assert clean(float("-inf")) == "-Infinity"
    assert clean(1.5) == 1.5
    assert clean({"a": [1, b"\x00", None, True]}) == {"a": ["1", "AA==", None, True]}


def test_encoder_never_writes_reserved_keys() -> None:
    """Spec §11.1: no `$` keys but the encoding's own. A dict holding the text of an int64
    encoding must not reach a client as an int64."""
    with pytest.raises(InvalidValueError):
        _core.convex_json({"$integer": "AQAAAAAAAAA="})
    with pytest.raises(InvalidValueError):
        _core.convex_json({"a": {"$foo": 1}})


# -- round trip ------------------------------------------------------------------------------

_keys = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12).filter(
    lambda k: not k.startswith("$")
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, 0.0, float("nan"), float("inf"), float("-inf")]),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=300)
@given(_values)
def test_round_trip_is_exact(value: Any) -> None:
    text = _core.convex_json(value)
    # Strict JSON: special floats travel as $float, never as NaN/Infinity literals.
    parsed = json.loads(text, parse_constant=_no_constants)
    decoded = _core.from_convex_json(parsed)
    assert same(decoded, value), (value, text, decoded)


def _no_constants(name: str) -> Any:
    raise AssertionError(f"non-standard JSON constant {name} in the encoding")
