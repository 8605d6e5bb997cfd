"""A schema inferred from stored documents, written as the ``define_schema(...)`` to paste.

Every document of every user table is read at one snapshot (page by page, never a table in
memory) and its fields folded into a shape:

* a field's type is the union of the types seen (``v.union(...)``, members in a fixed
  order), ``v.optional(...)`` when some documents lack it;
* strings that are all ids of one table become ``v.id("table")``;
* objects nest (``v.object({...})``); an object with more than :data:`MAX_OBJECT_FIELDS`
  distinct keys, or keys that are not identifiers, becomes ``v.record(v.string(), ...)``;
* arrays take the union of their elements (``v.array(...)``; empty arrays only:
  ``v.array(v.any())``);
* indexes declared in the catalog are written with ``.index(...)``.

Source: Convex's dashboard "Generate schema" (shape inference over stored documents).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = ["MAX_OBJECT_FIELDS", "Shape", "infer_schema", "render_schema"]

MAX_OBJECT_FIELDS = 64
"""Objects with more distinct keys than this are inferred as records."""
_SYSTEM = ("_id", "_creationTime")
# The order members of a union are written in.
_ORDER = ("null", "boolean", "int64", "float64", "string", "id", "bytes", "array", "object")


@dataclass
class Shape:
    """What was seen at one place: kinds (with nested shapes), and how often it was there."""

    kinds: set[str] = field(default_factory=set)
    id_tables: set[str] = field(default_factory=set)
    plain_strings: bool = False
    element: Shape | None = None
    fields: dict[str, Shape] = field(default_factory=dict)
    objects: int = 0
    present: int = 0

    def add(self, value: Any, table_of: Any) -> None:
        """Fold one value into the shape."""
        self.present += 1
        if value is None:
            self.kinds.add("null")
        elif isinstance(value, bool):
            self.kinds.add("boolean")
        elif isinstance(value, int):
            self.kinds.add("int64")
        elif isinstance(value, float):
            self.kinds.add("float64")
        elif isinstance(value, str):
            table = table_of(value)
            if table is None:
                self.kinds.add("string")
                self.plain_strings = True
            else:
                self.kinds.add("id")
                self.id_tables.add(table)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            self.kinds.add("bytes")
        elif isinstance(value, list):
            self.kinds.add("array")
            for item in value:
                if self.element is None:
                    self.element = Shape()
                self.element.add(item, table_of)
        elif isinstance(value, dict):
            self.kinds.add("object")
            self.objects += 1
            for key, item in value.items():
                self.fields.setdefault(key, Shape()).add(item, table_of)

    def render(self, indent: int = 0) -> str:
        """The validator expression for this shape."""
        members: list[str] = []
        for kind in _ORDER:
            if kind not in self.kinds:
                continue
            if kind == "id":
                if len(self.id_tables) == 1 and not self.plain_strings:
                    members.append(f'v.id("{next(iter(self.id_tables))}")')
                elif "string" not in self.kinds:
                    members.append("v.string()")
            elif kind == "array":
                inner = "v.any()" if self.element is None else self.element.render(indent)
                members.append(f"v.array({inner})")
            elif kind == "object":
                members.append(_render_object(self.fields, self.objects, indent))
            else:
                members.append(f"v.{kind}()")
        if not members:
            return "v.any()"
        if len(members) == 1:
            return members[0]
        return f"v.union({', '.join(members)})"


def _render_object(fields: dict[str, Shape], count: int, indent: int) -> str:
    if _as_record(fields):
        merged = Shape()
        for shape in fields.values():
            _merge(merged, shape)
        return f"v.record(v.string(), {merged.render(indent)})"
    return f"v.object({_render_fields(fields, count, indent)})"


def _as_record(fields: dict[str, Shape]) -> bool:
    keys_ok = all(k.isidentifier() and not k.startswith("$") for k in fields)
    return len(fields) > MAX_OBJECT_FIELDS or not keys_ok


def _render_fields(fields: dict[str, Shape], count: int, indent: int) -> str:
    """``{"field": validator, ...}`` (``v.optional`` where fewer than ``count`` had it)."""
    if not fields:
        return "{}"
    pad = " " * (indent + 4)
    lines = []
    for key in sorted(fields):
        shape = fields[key]
        rendered = shape.render(indent + 4)
        if shape.present < count:
            rendered = f"v.optional({rendered})"
        lines.append(f'{pad}"{key}": {rendered},')
    return "{\n" + "\n".join(lines) + "\n" + " " * indent + "}"


def _merge(into: Shape, other: Shape) -> None:
    into.kinds |= other.kinds
    into.id_tables |= other.id_tables
    into.plain_strings |= other.plain_strings
    into.present += other.present
    if other.element is not None:
        if into.element is None:
            into.element = Shape()
        _merge(into.element, other.element)
    for key, shape in other.fields.items():
        _merge(into.fields.setdefault(key, Shape()), shape)
    into.objects += other.objects


@dataclass
class TableShape:
    """One table's inferred document shape, document count and declared indexes."""

    name: str
    documents: int
    shape: Shape
    indexes: list[tuple[str, list[str]]]


async def infer_schema(db: Database, page_size: int = 500) -> list[TableShape]:
    """Read every user table at one snapshot and infer its document shape.

    Returns:
        One :class:`TableShape` per user table (system tables, ``_``-prefixed, are left
        out), in name order.
    """
    import asyncio

    engine = db._engine
    with db.pin_snapshot() as ts:
        txn = engine.begin_at(ts)
        out = []
        for table in sorted(engine.tables(), key=lambda t: t["name"]):
            name = table["name"]
            if name.startswith("_"):
                continue
            shape = Shape()
            documents = 0
            after: bytes | None = None
            while True:
                docs, after = await asyncio.to_thread(engine.table_page, name, ts, after, page_size)
                for doc in docs:
                    documents += 1
                    shape.add({k: val for k, val in doc.items() if k not in _SYSTEM}, txn.table_of)
                if after is None:
                    break
            indexes = [
                (index["name"], list(index["fields"]))
                for index in table["indexes"]
                if index["fields"]  # the built-in by_id and by_creation_time have none
            ]
            out.append(TableShape(name, documents, shape, indexes))
    return out


def render_schema(tables: list[TableShape]) -> str:
    """The Python source of a schema module for ``tables``."""
    lines = [
        '"""Inferred from the stored documents by `python -m reactive schema`."""',
        "",
        "from reactive import define_schema, define_table, v",
        "",
        "schema = define_schema({",
    ]
    for table in tables:
        fields = table.shape.fields
        count = max(table.documents, 1)
        if _as_record(fields):
            inner = _render_object(fields, count, 4)
        else:
            inner = _render_fields(fields, count, 4)
        line = f'    "{table.name}": define_table({inner})'
        for name, index_fields in table.indexes:
            line += f".index({name!r}, {index_fields!r})"
        plural = "" if table.documents == 1 else "s"
        lines.append(f"    # {table.documents} document{plural}")
        lines.append(line + ",")
    lines.append("})")
    return "\n".join(lines) + "\n"
