"""Validators from Python types: dataclasses, ``TypedDict``s and pydantic v2 models.

Wherever a validator is accepted (``define_table``, ``args=``, ``returns=``, inside
``v.object``, ``v.array``, ...), a Python type may stand instead:

=================================  ===========================================
Python type                        validator
=================================  ===========================================
``str`` / ``float`` / ``int``      ``v.string()`` / ``v.float64()`` / ``v.int64()``
``bool`` / ``bytes`` / ``None``    ``v.boolean()`` / ``v.bytes()`` / ``v.null()``
``typing.Any``                     ``v.any()``
``list[T]``, ``tuple[T, ...]``     ``v.array(T)``
``dict[str, T]``                   ``v.record(v.string(), T)``
``T | U``, ``Optional[T]``         ``v.union(T, U)``, ``v.union(T, v.null())``
``Literal["a", 1]``                ``v.union(v.literal("a"), v.literal(1))``
``Annotated[T, validator]``        that validator (e.g. ``Annotated[str, v.id("users")]``)
``Annotated[T, other]``            ``T`` (pydantic models still check their constraints)
a dataclass                        ``v.object``: a field with a default is optional
a ``TypedDict``                    ``v.object``: keys not required are optional
a pydantic model                   ``v.object``: fields not required are optional
=================================  ===========================================

Anything else (``set``, ``datetime``, a plain class, ``dict[int, T]``) is refused when the
app loads, with :class:`~reactive.errors.SchemaError` naming where and which field.

Values: an instance of a dataclass or a pydantic model may be inserted, patched, passed as
an argument or returned; it is stored as its fields (:func:`to_value`). A pydantic model
used as ``args=`` is also validated by pydantic (its constraints, e.g. ``Field(gt=0)``),
and errors name the field as pydantic does; an embedded caller
(``await db.query(...)``) of a function whose ``returns=`` is a dataclass or a model gets
that class back (:func:`from_value`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from reactive.errors import SchemaError

__all__ = [
    "from_value",
    "is_model",
    "plain_document",
    "pydantic_check",
    "to_value",
    "validator_from_type",
]

_PLAIN = (str, int, float, bool, bytes, type(None))


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_fields") and hasattr(tp, "model_validate")


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def is_model(tp: Any) -> bool:
    """Whether ``tp`` is a dataclass or a pydantic model class (values come back as it)."""
    return (isinstance(tp, type) and dataclasses.is_dataclass(tp)) or _is_pydantic(tp)


def validator_from_type(tp: Any, where: str) -> Any:
    """The validator for the Python type ``tp`` (see the module docstring).

    Raises:
        SchemaError: ``tp`` (or a field of it) has no Convex value type; the message says
            where (``where``) and which field.
    """
    from reactive.schema import Validator, v

    if isinstance(tp, Validator):
        return tp
    if tp is None or tp is type(None):
        return v.null()
    if tp is Any or tp is object:
        return v.any()
    simple = {str: v.string, float: v.float64, int: v.int64, bool: v.boolean, bytes: v.bytes}
    if tp in simple:
        return simple[tp]()
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        for meta in args[1:]:
            if isinstance(meta, Validator):
                return meta
        return validator_from_type(args[0], where)
    if origin is typing.Literal:
        members = [v.literal(x) for x in args]
        return members[0] if len(members) == 1 else v.union(*members)
    if origin in (typing.Union, types.UnionType):
        return v.union(*(validator_from_type(a, where) for a in args))
    if origin in (list, Sequence, tuple) or (origin is not None and origin is list):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise SchemaError(f"{where}: {tp!r} is a fixed tuple; use tuple[T, ...] or list[T]")
        element = args[0] if args else Any
        return v.array(validator_from_type(element, f"{where}[]"))
    if tp in (list, tuple):
        return v.array(v.any())
    if origin in (dict, Mapping) or tp is dict:
        key, value = args if args else (str, Any)
        if key is not str:
            raise SchemaError(f"{where}: {tp!r}: object keys are strings (dict[str, T])")
        return v.record(v.string(), validator_from_type(value, f"{where}[*]"))
    if _is_pydantic(tp):
        fields = {}
        for name, info in tp.model_fields.items():
            key = info.alias or name
            inner = validator_from_type(_annotation(info), f"{where}.{key}")
            fields[key] = inner if info.is_required() else v.optional(inner)
        return v.object(fields)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = {}
        for f in dataclasses.fields(tp):
            inner = validator_from_type(hints.get(f.name, Any), f"{where}.{f.name}")
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            fields[f.name] = v.optional(inner) if has_default else inner
        return v.object(fields)
    if _is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        required = tp.__required_keys__
        fields = {}
        for name, hint in hints.items():
            inner = validator_from_type(_unwrap_required(hint), f"{where}.{name}")
            fields[name] = inner if name in required else v.optional(inner)
        return v.object(fields)
    raise SchemaError(
        f"{where}: {getattr(tp, '__name__', None) or tp!r} has no Convex value type "
        "(use str, float, int, bool, bytes, None, list, dict[str, T], a union, Literal, a "
        "dataclass, a TypedDict, a pydantic model, or a validator)"
    )


def _annotation(info: Any) -> Any:
    """A pydantic field's annotation, with its metadata kept as ``Annotated``."""
    annotation = info.annotation
    if info.metadata:
        return typing.Annotated[annotation, *info.metadata]
    return annotation


def _unwrap_required(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    wrappers = (typing.Required, typing.NotRequired, getattr(typing, "ReadOnly", None))
    if origin is not None and origin in wrappers:
        return typing.get_args(hint)[0]
    return hint


_SCALAR_TYPES = frozenset({str, int, float, bool, bytes, type(None)})


def to_value(value: Any) -> Any:
    """``value`` with dataclass and pydantic instances turned into dicts (recursively).

    Plain values are returned as they are (no copy).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):
        return to_value(value.model_dump(by_alias=True, exclude_unset=False))
    if isinstance(value, dict):
        for x in value.values():
            # One set lookup per scalar (long arrays of floats: embeddings).
            if type(x) not in _SCALAR_TYPES and _needs_conversion(x):
                return {k: to_value(x) for k, x in value.items()}
        return value
    if isinstance(value, (list, tuple)):
        for x in value:
            if type(x) not in _SCALAR_TYPES and _needs_conversion(x):
                return [to_value(x) for x in value]
    return value


def plain_document(value: Any) -> Any:
    """:func:`to_value` with a fast path for a dict of plain fields (documents, arguments).

    A dict whose values are all scalars is returned as it is after one type check per
    field; anything else goes through :func:`to_value`.
    """
    if type(value) is dict:
        for x in value.values():
            if not isinstance(x, _PLAIN):
                return to_value(value)
        return value
    return to_value(value)


def _needs_conversion(x: Any) -> bool:
    if isinstance(x, (str, int, float, bool, bytes)) or x is None:
        return False
    if isinstance(x, (dict, list, tuple)):
        return True  # checked inside
    return (dataclasses.is_dataclass(x) and not isinstance(x, type)) or hasattr(x, "model_dump")


def from_value(tp: Any, value: Any) -> Any:
    """``value`` (a dict) as an instance of the dataclass or pydantic model ``tp``."""
    if value is None or not isinstance(value, dict):
        return value
    if _is_pydantic(tp):
        return tp.model_validate(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                inner = hints.get(f.name)
                kwargs[f.name] = (
                    from_value(inner, value[f.name]) if is_model(inner) else (value[f.name])
                )
        return tp(**kwargs)
    return value


def pydantic_check(tp: Any, value: dict[str, Any]) -> str | None:
    """If ``tp`` is a pydantic model, its own validation of ``value``: None or the error.

    The error names the field as pydantic does (``priority: Input should be ...``).
    """
    if not _is_pydantic(tp):
        return None
    from pydantic import ValidationError

    try:
        tp.model_validate(value)
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            loc = ".".join(str(x) for x in error.get("loc", ()))
            parts.append(f"{loc}: {error.get('msg')}" if loc else str(error.get("msg")))
        return "; ".join(parts)
    return None
