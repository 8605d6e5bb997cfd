"""Validators (``v.*``) and schemas (``define_schema``, ``define_table``).

These are Convex's validators and ``defineSchema``/``defineTable`` in snake_case. A
validator checks a Python value and returns it, converted where Convex converts:
``v.float64()`` accepts an ``int`` and stores it as a float (the official clients send every
JSON number as a float64), ``v.int64()`` wants an ``int``.

Shapes:
    * Values are ``None, bool, int (int64), float, str, bytes, list, dict``.
    * ``Validator.to_json()`` is Convex's validator JSON (``{"type": "string"}``, ...), used to
      fingerprint a schema and to tell which tables changed between opens.

Errors:
    A failed check raises :class:`ValidationFailure` with the field path, what was expected
    and what was found; callers turn it into ``SchemaValidationError`` (documents, naming the
    table) or ``ArgumentValidationError`` (function arguments).
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reactive.errors import SchemaError
from reactive.values import Int64

__all__ = [
    "DatabaseSchema",
    "IndexDefinition",
    "SearchIndexDefinition",
    "TableDefinition",
    "ValidationFailure",
    "Validator",
    "VectorIndexDefinition",
    "define_schema",
    "define_table",
    "type_name",
    "v",
]

IdChecker = Callable[[str, str], bool]
"""``(table, text) -> bool``: whether ``text`` is an id of ``table``."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def type_name(value: Any) -> str:
    """The Convex type name of a Python value (``"int64"``, ``"float64"``, ``"object"``...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class ValidationFailure(Exception):
    """A value that a validator refuses.

    Attributes:
        path: Where, as a field path (``"author.name"``, ``"tags[2]"``); ``""`` for the root.
        expected: The validator's description (``"string"``).
        found: The value's type name (``"int64"``) or a short reason.
    """

    def __init__(self, path: str, expected: str, found: str, detail: str = "") -> None:
        self.path = path
        self.expected = expected
        self.found = found
        self.detail = detail
        where = f"field {path!r}" if path else "value"
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{where} must be {expected}, found {found}{extra}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class Validator:
    """Base class of every validator. Instances are immutable."""

    is_optional = False
    exact_type: type | None = None
    """A type whose instances always pass unchanged (lets arrays check in one pass)."""

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        """Validate ``value``; return it, converted as Convex converts.

        ``coerce=False`` refuses what would need a conversion (an ``int`` where a float64 is
        expected): a union tries its members that way first, so ``v.union(v.float64(),
        v.int64())`` keeps an ``int`` an int64 rather than turning it into a float.

        Raises:
            ValidationFailure: the value does not match.
        """
        raise ValidationFailure(path, self.describe(), type_name(value))

    def describe(self) -> str:
        """A short human description (``"array<string>"``)."""
        return "any"

    def to_json(self) -> dict[str, Any]:
        """Convex's validator JSON."""
        return {"type": "any"}

    def __repr__(self) -> str:
        return f"v.{self.describe()}"


class _Any(Validator):
    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        return value


class _String(Validator):
    exact_type = str

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if isinstance(value, str):
            return value
        raise ValidationFailure(path, "string", type_name(value))

    def describe(self) -> str:
        return "string"

    def to_json(self) -> dict[str, Any]:
        return {"type": "string"}


class _Float64(Validator):
    exact_type = float

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if isinstance(value, float):
            return value
        if coerce and isinstance(value, int) and not isinstance(value, bool):
            as_float = float(value)
            if not math.isfinite(as_float):
                raise ValidationFailure(path, "float64", "int64", "too large for a float64")
            return as_float
        raise ValidationFailure(path, "float64", type_name(value))

    def describe(self) -> str:
        return "float64"

    def to_json(self) -> dict[str, Any]:
        return {"type": "number"}


class _Int64(Validator):
    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if _INT64_MIN <= value <= _INT64_MAX:
                # Checked as an int64: it stays one on the wire (reactive.values).
                return value if type(value) is Int64 else Int64(value)
            raise ValidationFailure(path, "int64", "int", "outside the int64 range")
        raise ValidationFailure(path, "int64", type_name(value))

    def describe(self) -> str:
        return "int64"

    def to_json(self) -> dict[str, Any]:
        return {"type": "bigint"}


class _Boolean(Validator):
    exact_type = bool

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if isinstance(value, bool):
            return value
        raise ValidationFailure(path, "boolean", type_name(value))

    def describe(self) -> str:
        return "boolean"

    def to_json(self) -> dict[str, Any]:
        return {"type": "boolean"}


class _Null(Validator):
    exact_type = type(None)

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if value is None:
            return value
        raise ValidationFailure(path, "null", type_name(value))

    def describe(self) -> str:
        return "null"

    def to_json(self) -> dict[str, Any]:
        return {"type": "null"}


class _Bytes(Validator):
    exact_type = bytes

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise ValidationFailure(path, "bytes", type_name(value))

    def describe(self) -> str:
        return "bytes"

    def to_json(self) -> dict[str, Any]:
        return {"type": "bytes"}


@dataclass(frozen=True, repr=False)
class _Id(Validator):
    table: str

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if not isinstance(value, str):
            raise ValidationFailure(path, self.describe(), type_name(value))
        if ids is not None and not ids(self.table, value):
            raise ValidationFailure(
                path, self.describe(), "string", f"{value[:40]!r} is not an id of this table"
            )
        return value

    def describe(self) -> str:
        return f"id({self.table!r})"

    def to_json(self) -> dict[str, Any]:
        return {"type": "id", "tableName": self.table}


@dataclass(frozen=True, repr=False)
class _Array(Validator):
    element: Validator

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if not isinstance(value, (list, tuple)):
            raise ValidationFailure(path, self.describe(), type_name(value))
        exact = self.element.exact_type
        if exact is not None and all(type(x) is exact for x in value):
            return list(value)
        return [self.element.check(x, f"{path}[{i}]", ids, coerce) for i, x in enumerate(value)]

    def describe(self) -> str:
        return f"array<{self.element.describe()}>"

    def to_json(self) -> dict[str, Any]:
        return {"type": "array", "value": self.element.to_json()}


@dataclass(frozen=True, repr=False)
class _Object(Validator):
    fields: Mapping[str, Validator]

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if not isinstance(value, dict):
            raise ValidationFailure(path, "object", type_name(value))
        out: dict[str, Any] = {}
        for name, validator in self.fields.items():
            if name in value:
                out[name] = validator.check(value[name], _join(path, name), ids, coerce)
            elif not validator.is_optional:
                raise ValidationFailure(
                    _join(path, name), validator.describe(), "nothing (the field is missing)"
                )
        for name in value:
            if name not in self.fields:
                raise ValidationFailure(
                    _join(path, str(name)),
                    "absent (the validator has no such field)",
                    type_name(value[name]),
                )
        return out

    def describe(self) -> str:
        inner = ", ".join(f"{k}: {x.describe()}" for k, x in self.fields.items())
        return f"object{{{inner}}}"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "object",
            "value": {
                k: {"fieldType": x.to_json(), "optional": x.is_optional}
                for k, x in sorted(self.fields.items())
            },
        }


@dataclass(frozen=True, repr=False)
class _Record(Validator):
    keys: Validator
    values: Validator

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if not isinstance(value, dict):
            raise ValidationFailure(path, self.describe(), type_name(value))
        out: dict[str, Any] = {}
        for k, x in value.items():
            key = self.keys.check(k, _join(path, str(k)), ids, coerce)
            out[key] = self.values.check(x, _join(path, str(k)), ids, coerce)
        return out

    def describe(self) -> str:
        return f"record<{self.keys.describe()}, {self.values.describe()}>"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "record",
            "keys": self.keys.to_json(),
            "values": {"fieldType": self.values.to_json(), "optional": False},
        }


@dataclass(frozen=True, repr=False)
class _Union(Validator):
    members: tuple[Validator, ...]

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        # A member that takes the value as it is wins over one that would convert it.
        for strict in (True, False) if coerce else (True,):
            for member in self.members:
                try:
                    return member.check(value, path, ids, not strict)
                except ValidationFailure:
                    continue
        raise ValidationFailure(path, self.describe(), type_name(value))

    def describe(self) -> str:
        return "union(" + " | ".join(m.describe() for m in self.members) + ")"

    def to_json(self) -> dict[str, Any]:
        return {"type": "union", "value": [m.to_json() for m in self.members]}


@dataclass(frozen=True, repr=False)
class _Literal(Validator):
    value: Any

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        if type(value) is type(self.value) and value == self.value:
            return value
        raise ValidationFailure(path, self.describe(), f"{type_name(value)} {value!r:.40}")

    def describe(self) -> str:
        return f"literal({self.value!r})"

    def to_json(self) -> dict[str, Any]:
        literal: Any = self.value
        if isinstance(literal, int) and not isinstance(literal, bool):
            literal = {"$integer": str(literal)}
        return {"type": "literal", "value": literal}


@dataclass(frozen=True, repr=False)
class _Optional(Validator):
    inner: Validator
    is_optional = True

    def check(
        self, value: Any, path: str = "", ids: IdChecker | None = None, coerce: bool = True
    ) -> Any:
        return self.inner.check(value, path, ids, coerce)

    def describe(self) -> str:
        return f"optional<{self.inner.describe()}>"

    def to_json(self) -> dict[str, Any]:
        return self.inner.to_json()


def _as_validator(x: Any, where: str) -> Validator:
    if isinstance(x, Validator):
        return x
    if isinstance(x, type) or x is None or typing.get_origin(x) is not None or x is typing.Any:
        from reactive.pytypes import validator_from_type

        result: Validator = validator_from_type(x, where)
        return result
    raise SchemaError(f"{where}: expected a validator (v.string(), ...), found {x!r:.60}")


class _V:
    """The validator builders, used as ``v.string()`` (Convex's ``v``)."""

    @staticmethod
    def string() -> Validator:
        """Strings."""
        return _String()

    @staticmethod
    def float64() -> Validator:
        """Floats; an ``int`` is accepted and stored as a float."""
        return _Float64()

    @staticmethod
    def number() -> Validator:
        """Alias of :meth:`float64` (Convex's ``v.number()``)."""
        return _Float64()

    @staticmethod
    def int64() -> Validator:
        """Python ``int`` in the int64 range (Convex's ``v.int64()``/``v.bigint()``)."""
        return _Int64()

    @staticmethod
    def bigint() -> Validator:
        """Alias of :meth:`int64`."""
        return _Int64()

    @staticmethod
    def boolean() -> Validator:
        """``True``/``False``."""
        return _Boolean()

    @staticmethod
    def null() -> Validator:
        """``None``."""
        return _Null()

    @staticmethod
    def bytes() -> Validator:
        """``bytes`` (``bytearray`` and ``memoryview`` are converted)."""
        return _Bytes()

    @staticmethod
    def id(table: str) -> Validator:
        """An id of a document of ``table``."""
        if not isinstance(table, str) or not table:
            raise SchemaError("v.id(table) needs a table name")
        return _Id(table)

    @staticmethod
    def array(element: Validator) -> Validator:
        """A list whose elements all match ``element``."""
        return _Array(_as_validator(element, "v.array"))

    @staticmethod
    def object(fields: Mapping[str, Validator]) -> Validator:
        """A dict with exactly these fields (``v.optional`` ones may be absent)."""
        if not isinstance(fields, Mapping):
            raise SchemaError("v.object(fields) needs a dict of validators")
        return _Object(
            {str(k): _as_validator(x, f"v.object field {k!r}") for k, x in fields.items()}
        )

    @staticmethod
    def record(keys: Validator, values: Validator) -> Validator:
        """A dict with any keys matching ``keys`` and values matching ``values``."""
        return _Record(_as_validator(keys, "v.record keys"), _as_validator(values, "v.record"))

    @staticmethod
    def union(*members: Validator) -> Validator:
        """Any of ``members`` (the first that matches converts the value)."""
        if not members:
            raise SchemaError("v.union() needs at least one validator")
        return _Union(tuple(_as_validator(m, "v.union member") for m in members))

    @staticmethod
    def literal(value: str | int | float | bool) -> Validator:
        """Exactly this value (of this type)."""
        if not isinstance(value, (str, int, float, bool)):
            raise SchemaError("v.literal() takes a string, number or boolean")
        return _Literal(value)

    @staticmethod
    def optional(inner: Validator) -> Validator:
        """An object field that may be absent."""
        return _Optional(_as_validator(inner, "v.optional"))

    @staticmethod
    def any() -> Validator:
        """Any value."""
        return _Any()


v = _V()


@dataclass(frozen=True)
class IndexDefinition:
    """An index: ``name`` over ``fields`` (``_creationTime`` and ``_id`` are appended)."""

    name: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class SearchIndexDefinition:
    """A full-text search index (stored in the schema; queried with ``with_search_index``)."""

    name: str
    search_field: str
    filter_fields: tuple[str, ...]


@dataclass(frozen=True)
class VectorIndexDefinition:
    """A vector index (stored in the schema)."""

    name: str
    vector_field: str
    dimensions: int
    filter_fields: tuple[str, ...]


@dataclass
class TableDefinition:
    """A table: its document validator and indexes (Convex's ``defineTable``)."""

    validator: Validator | None
    indexes: list[IndexDefinition] = field(default_factory=list)
    search_indexes: list[SearchIndexDefinition] = field(default_factory=list)
    vector_indexes: list[VectorIndexDefinition] = field(default_factory=list)

    def _check_new_name(self, name: str) -> None:
        taken = {i.name for i in self.indexes}
        taken |= {i.name for i in self.search_indexes} | {i.name for i in self.vector_indexes}
        if name in taken:
            raise SchemaError(f"index {name!r} is defined twice")
        if name in ("by_id", "by_creation_time") or name.startswith("_"):
            raise SchemaError(f"index name {name!r} is reserved")

    def index(self, name: str, fields: Sequence[str]) -> TableDefinition:
        """Add an index on ``fields`` (in order); returns the table for chaining."""
        if isinstance(fields, str):
            raise SchemaError(f"index {name!r}: fields must be a list of field names")
        self._check_new_name(name)
        self.indexes.append(IndexDefinition(name, tuple(fields)))
        return self

    def search_index(
        self, name: str, *, search_field: str, filter_fields: Sequence[str] = ()
    ) -> TableDefinition:
        """Declare a full-text search index on ``search_field``."""
        self._check_new_name(name)
        self.search_indexes.append(SearchIndexDefinition(name, search_field, tuple(filter_fields)))
        return self

    def vector_index(
        self,
        name: str,
        *,
        vector_field: str,
        dimensions: int,
        filter_fields: Sequence[str] = (),
    ) -> TableDefinition:
        """Declare a vector index on ``vector_field`` of ``dimensions`` floats."""
        self._check_new_name(name)
        if not isinstance(dimensions, int) or not 2 <= dimensions <= 4096:
            raise SchemaError(f"vector index {name!r}: dimensions must be an int in [2, 4096]")
        self.vector_indexes.append(
            VectorIndexDefinition(name, vector_field, dimensions, tuple(filter_fields))
        )
        return self

    def check_document(self, doc: Any, ids: IdChecker | None = None) -> dict[str, Any]:
        """Validate a document's user fields; returns them converted.

        Raises:
            ValidationFailure: the document does not match.
        """
        if self.validator is None:
            if not isinstance(doc, dict):
                raise ValidationFailure("", "object", type_name(doc))
            return doc
        checked = self.validator.check(doc, "", ids)
        if not isinstance(checked, dict):
            raise ValidationFailure("", "object", type_name(checked))
        return checked

    def to_json(self) -> dict[str, Any]:
        """The table's JSON form (validator and indexes)."""
        return {
            "documentType": self.validator.to_json() if self.validator else None,
            "indexes": [
                {"indexDescriptor": i.name, "fields": list(i.fields)} for i in self.indexes
            ],
            "searchIndexes": [
                {
                    "indexDescriptor": i.name,
                    "searchField": i.search_field,
                    "filterFields": list(i.filter_fields),
                }
                for i in self.search_indexes
            ],
            "vectorIndexes": [
                {
                    "indexDescriptor": i.name,
                    "vectorField": i.vector_field,
                    "dimensions": i.dimensions,
                    "filterFields": list(i.filter_fields),
                }
                for i in self.vector_indexes
            ],
        }


def is_float_field(validator: Validator | None, path: str) -> bool:
    """Whether the field at dotted ``path`` of an object validator holds float64 numbers.

    True when its validator (through ``v.optional`` and nested objects) is ``v.float64()``,
    or a union whose only numeric member is ``v.float64()`` (``v.union(v.float64(),
    v.null())``): an ``int`` compared with such a field means the float (the number policy:
    Convex orders every int64 below every float64, so ``45`` would match nothing useful).
    """
    current: Validator | None = validator
    for part in path.split("."):
        while isinstance(current, _Optional):
            current = current.inner
        if not isinstance(current, _Object) or part not in current.fields:
            return False
        current = current.fields[part]
    while isinstance(current, _Optional):
        current = current.inner
    if isinstance(current, _Float64):
        return True
    if isinstance(current, _Union):
        numeric = [m for m in current.members if isinstance(m, (_Float64, _Int64))]
        return bool(numeric) and all(isinstance(m, _Float64) for m in numeric)
    return False


def define_table(fields: Mapping[str, Validator] | Validator | None = None) -> TableDefinition:
    """A table whose documents have these fields (a dict of validators or a validator).

    Raises:
        SchemaError: a field name starts with ``_`` or ``$``, or a value is not a validator.
    """
    if fields is None:
        return TableDefinition(None)
    if not isinstance(fields, (Validator, Mapping)):
        fields = _as_validator(fields, "define_table")
        if not isinstance(fields, _Object):
            raise SchemaError("define_table() of a type needs a dataclass, TypedDict or model")
    if isinstance(fields, Validator):
        validator = fields
    elif isinstance(fields, Mapping):
        for name in fields:
            if not isinstance(name, str) or name.startswith(("_", "$")):
                raise SchemaError(f"field name {name!r}: names starting with _ or $ are reserved")
        validator = v.object(fields)
    else:
        raise SchemaError("define_table() takes a dict of validators or a validator")
    return TableDefinition(validator)


@dataclass
class DatabaseSchema:
    """The app's schema: tables by name (Convex's ``defineSchema``).

    Attributes:
        tables: Table name -> definition.
        schema_validation: Whether writes are checked against the validators (default true).
        strict_tables: Whether tables absent from the schema are refused.
    """

    tables: dict[str, TableDefinition]
    schema_validation: bool = True
    strict_tables: bool = True

    def to_json(self) -> str:
        """A canonical JSON form (sorted keys), stored to tell what changed between opens."""
        return json.dumps(
            {name: t.to_json() for name, t in sorted(self.tables.items())},
            sort_keys=True,
            separators=(",", ":"),
        )


def define_schema(
    tables: Mapping[str, TableDefinition],
    *,
    schema_validation: bool = True,
    strict_table_name_types: bool = True,
) -> DatabaseSchema:
    """The app's schema.

    Args:
        tables: Table name -> ``define_table(...)``.
        schema_validation: Check every write against the validators (Convex's default).
        strict_table_name_types: Refuse writes to tables not in the schema.

    Raises:
        SchemaError: a table name is not an identifier, or a value is not a table.
    """
    out: dict[str, TableDefinition] = {}
    for name, table in tables.items():
        if not isinstance(table, TableDefinition):
            raise SchemaError(f"table {name!r}: expected define_table(...), found {table!r:.60}")
        if (
            not isinstance(name, str)
            or not name
            or len(name) > 64
            or not name[0].isascii()
            or not name[0].isalpha()
            or not all(c.isascii() and (c.isalnum() or c == "_") for c in name)
        ):
            raise SchemaError(
                f"table name {name!r}: table names are identifiers of at most 64 characters "
                "(letters, digits and underscores, starting with a letter)"
            )
        out[name] = table
    return DatabaseSchema(out, schema_validation, strict_table_name_types)
