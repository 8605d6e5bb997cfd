"""``python -m reactive codegen``: the generated TypeScript type-checks a frontend that uses
it right (``tsc --noEmit`` with the official npm ``convex`` package and React) and refuses
one that uses it wrong (each misuse in its own file must be an error).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reactive.codegen import generate, python_api, ts_type
from reactive.functions import load_app

ROOT = Path(__file__).resolve().parents[1]
TS_DIR = ROOT / "tests" / "js-ts"
CHAT = ROOT / "examples" / "chat"

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "users": define_table({"name": v.string()}),
            "notes": define_table({
                "text": v.string(),
                "done": v.optional(v.boolean()),
                "tags": v.array(v.string()),
                "owner": v.id("users"),
                "priority": v.union(v.literal("low"), v.literal("high")),
                "count": v.int64(),
                "meta": v.object({"source": v.string(), "weight": v.float64()}),
                "extra": v.record(v.string(), v.any()),
                "blob": v.optional(v.bytes()),
            }).index("by_owner", ["owner"]),
        })
    """,
    "notes.py": """
        from reactive import internal_query, mutation, query, v


        @mutation(
            args={
                "text": v.string(),
                "owner": v.id("users"),
                "priority": v.union(v.literal("low"), v.literal("high")),
                "tags": v.array(v.string()),
                "count": v.int64(),
            },
            returns=v.id("notes"),
        )
        async def add(ctx, text, owner, priority, tags, count):
            meta = {"source": "app", "weight": 1.0}
            doc = {"text": text, "owner": owner, "priority": priority, "tags": tags,
                   "count": count, "meta": meta, "extra": {}}
            return await ctx.db.insert("notes", doc)


        @query(args={"owner": v.id("users")}, returns=v.array(v.string()))
        async def titles(ctx, owner):
            return [n["text"] for n in await ctx.db.query("notes").collect()]


        @query(args={}, returns=v.int64())
        async def count_done(ctx):
            return 0


        @internal_query(args={})
        async def secret(ctx):
            return "internal"
    """,
}

GOOD = """
import { ConvexHttpClient } from "convex/browser";
import { useMutation, useQuery } from "convex/react";
import { api, internal } from "./_generated/api";
import type { DataModel, Doc, Id, TableNames } from "./_generated/dataModel";

const client = new ConvexHttpClient("http://127.0.0.1:3210");

export async function demo(owner: Id<"users">): Promise<void> {
  const id: Id<"notes"> = await client.mutation(api.notes.add, {
    text: "x", owner, priority: "low", tags: ["a"], count: 1n,
  });
  const titles: string[] = await client.query(api.notes.titles, { owner });
  const n: bigint = await client.query(api.notes.count_done, {});
  const file: Id<"_storage"> | null = null;
  void id; void titles; void n; void file; void internal.notes.secret;
}

export function describe(note: Doc<"notes">): string {
  const done: boolean | undefined = note.done;
  const weight: number = note.meta.weight;
  const owner: Id<"users"> = note.owner;
  const when: number = note._creationTime;
  const table: TableNames = "notes";
  const index: DataModel["notes"]["indexes"]["by_owner"] = ["owner", "_creationTime"];
  void done; void weight; void owner; void when; void table; void index;
  return `${note.text} (${note.priority}, ${note.tags.join(",")}, ${note.count})`;
}

export function useTitles(owner: Id<"users">): string[] | undefined {
  const add = useMutation(api.notes.add);
  void add;
  return useQuery(api.notes.titles, { owner });
}
"""

BAD = {
    "wrong_arg_type": "void client.query(api.notes.titles, { owner: 5 });",
    "missing_arg": 'void client.mutation(api.notes.add, { text: "x" });',
    "unknown_function": "void client.query(api.notes.nope, {});",
    "internal_through_api": "void client.query(api.notes.secret, {});",
    "wrong_result_type": (
        "export async function f() { const s: string = "
        "await client.query(api.notes.count_done, {}); return s; }"
    ),
    "wrong_literal": (
        'void client.mutation(api.notes.add, { text: "x", owner: "u" as Id<"users">, '
        'priority: "urgent", tags: [], count: 1n });'
    ),
    "unknown_table": 'export const i: Id<"nope"> | null = null;',
    "float_for_int64": (
        'void client.mutation(api.notes.add, { text: "x", owner: "u" as Id<"users">, '
        'priority: "low", tags: [], count: 1 });'
    ),
}
BAD_PRELUDE = """
import { ConvexHttpClient } from "convex/browser";
import { api } from "./_generated/api";
import type { Id } from "./_generated/dataModel";
const client = new ConvexHttpClient("http://127.0.0.1:3210");
"""

CHAT_TSX = """
import { useMutation, useQuery } from "convex/react";
import { api } from "./_generated/api";
import type { Doc, Id } from "./_generated/dataModel";

export function Channel({ channel }: { channel: string }) {
  const messages = useQuery(api.messages.list, { channel });
  const send = useMutation(api.messages.send);
  const upload = useMutation(api.messages.generate_upload_url);
  const first: Doc<"messages"> | undefined = undefined;
  const image: Id<"_storage"> | undefined = first ? (first as Doc<"messages">).image : undefined;
  void upload;
  return (
    <button onClick={() => void send({ channel, author: "me", body: "hi", image })}>
      {messages === undefined ? "loading" : String(messages.length)}
    </button>
  );
}
"""

TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "target": "ES2022",
        "module": "ESNext",
        "moduleResolution": "Bundler",
        "jsx": "react-jsx",
        "skipLibCheck": True,
        "allowJs": False,
        "types": [],
    },
}


@pytest.fixture(scope="module")
def tsc() -> list[str]:
    """``node tests/js-ts/node_modules/typescript/bin/tsc`` (``npm ci`` there once)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the codegen type checks need Node.js")
    pinned = json.loads((TS_DIR / "package.json").read_text())["dependencies"]["typescript"]
    installed = TS_DIR / "node_modules" / "typescript" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != pinned:
        npm = shutil.which("npm")
        assert npm is not None, "npm is not on PATH: cannot install tests/js-ts"
        proc = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=TS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"npm ci failed:\n{proc.stdout}\n{proc.stderr}"
    return [node, str(TS_DIR / "node_modules" / "typescript" / "bin" / "tsc")]


def project(root: Path, app: Path, files: dict[str, str]) -> Path:
    """A TypeScript project in ``root``: the generated folder, ``files`` and tsconfig."""
    root.mkdir(parents=True)
    (root / "node_modules").symlink_to(TS_DIR / "node_modules")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reactive",
            "codegen",
            "--app",
            str(app),
            "--ts",
            str(root / "_generated"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (root / "_generated").iterdir()) == [
        "api.d.ts",
        "api.js",
        "dataModel.d.ts",
    ]
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "tsconfig.json").write_text(
        json.dumps({**TSCONFIG, "include": [*files, "_generated"]}, indent=2)
    )
    return root


def run_tsc(tsc: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tsc, "-p", str(root), "--pretty", "false"],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_generated_types_check_a_frontend_and_refuse_misuse(
    tsc: list[str], tmp_path: Path, make_app: Callable[[dict[str, str]], Path]
) -> None:
    app = make_app(APP)
    good = project(tmp_path / "good", app, {"good.ts": GOOD})
    proc = run_tsc(tsc, good)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    files = {f"{name}.ts": BAD_PRELUDE + line + "\n" for name, line in BAD.items()}
    bad = project(tmp_path / "bad", app, files)
    proc = run_tsc(tsc, bad)
    assert proc.returncode != 0
    failing = set(re.findall(r"(?:^|/)(\w+)\.ts\(\d+,\d+\): error", proc.stdout, re.M))
    assert failing == set(BAD), proc.stdout


def test_the_chat_example_types_a_react_component(tsc: list[str], tmp_path: Path) -> None:
    root = project(tmp_path / "chat", CHAT, {"channel.tsx": CHAT_TSX})
    proc = run_tsc(tsc, root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_app_without_a_schema_gets_the_untyped_forms(
    make_app: Callable[[dict[str, str]], Path],
) -> None:
    app = load_app(make_app({"m.py": APP["notes.py"]}))
    model = generate(app)["dataModel.d.ts"]
    assert "export type TableNames = string;" in model
    assert "AnyDataModel" in model
    assert 'Id<"notes">' in generate(app)["api.d.ts"]


@pytest.mark.parametrize(
    ("validator", "expected"),
    [
        ({"type": "literal", "value": {"$integer": "5"}}, "5n"),
        ({"type": "literal", "value": 2.5}, "2.5"),
        ({"type": "literal", "value": 'a"b'}, '"a\\"b"'),
        ({"type": "union", "value": []}, "never"),
        (
            {
                "type": "record",
                "keys": {"type": "id", "tableName": "t"},
                "values": {"fieldType": {"type": "null"}, "optional": False},
            },
            'Record<Id<"t">, null>',
        ),
        (
            {
                "type": "object",
                "value": {"odd key": {"fieldType": {"type": "bytes"}, "optional": True}},
            },
            '{\n  "odd key"?: ArrayBuffer;\n}',
        ),
    ],
)
def test_validator_types(validator: dict[str, object], expected: str) -> None:
    assert ts_type(validator) == expected


def test_an_unknown_validator_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no TypeScript type"):
        ts_type({"type": "set"})


ODD = {
    "class.py": """
        from reactive import mutation, query, v


        @query(
            args={
                "list": v.array(v.string()),
                "tags": v.array(v.string()),
                "odd key": v.optional(v.bytes()),
                "from": v.record(v.string(), v.union(v.int64(), v.null())),
            },
            returns=v.union(v.literal(5), v.literal(2.5), v.literal(True), v.literal("a")),
        )
        async def list(ctx, **args):
            return 5


        @mutation
        async def Final(ctx, n: int, label: str = "x") -> dict[str, int]:
            return {label: n}


        @query
        async def loose(ctx, *rest, **args):
            return None
    """,
}


def test_the_python_module_of_references(make_app: Callable[[dict[str, str]], Path]) -> None:
    """Validators become annotations; names that would shadow types or are keywords are
    kept apart; the module runs, and its references name the functions."""
    from reactive.functions import MutationReference, NoArgs, QueryReference

    app = load_app(make_app({**APP, **ODD}))
    text = python_api(app, "api")
    namespace: dict[str, object] = {"__name__": "api"}
    exec(compile(text, "api.py", "exec"), namespace)
    api: Any = namespace["api"]
    assert api.notes.add == MutationReference("notes:add")
    assert api.notes.count_done == QueryReference("notes:count_done")
    assert not hasattr(api.notes, "secret")  # internal
    assert api.class_.list == QueryReference("class:list")  # a keyword gets a "_"
    assert api.class_.Final == MutationReference("class:Final")
    assert "class NotesAddArgs(TypedDict):" in text
    assert "    owner: UsersId\n" in text and "    count: int\n" in text
    assert '    priority: Literal["low"] | Literal["high"]\n' in text
    assert 'UsersId = NewType("UsersId", str)' in text
    assert "    blob: NotRequired[bytes]\n" in text  # the notes table's document type
    assert (
        "NotesCountDoneArgs" not in text and "QueryReference[NotesCountDoneResult, NoArgs]" in text
    )
    assert "NotesCountDoneResult: TypeAlias = int" in text
    # A field named like a type its TypedDict uses, a keyword, or no identifier: the
    # functional form, which keeps the types apart.
    assert (
        'ClassListArgs = TypedDict(\n    "ClassListArgs",\n    {\n'
        '        "from": dict[str, int | None],\n        "list": list[str],\n'
        '        "odd key": NotRequired[bytes],\n        "tags": list[str],\n    },\n)'
    ) in text
    assert 'ClassListResult: TypeAlias = Literal[5] | float | Literal[True] | Literal["a"]' in text
    # No args=: the handler's annotated parameters and result; `Final` (a function's name)
    # is imported under another name.
    assert "from typing import" in text and "Final as Final_" in text
    assert "class ClassFinalArgs(TypedDict):\n    n: int\n    label: NotRequired[str]" in text
    assert "ClassFinalResult: TypeAlias = dict[str, int]" in text
    # *rest: any argument object; no annotation: any result.
    assert "ClassLooseArgs: TypeAlias = Mapping[str, Any]" in text
    assert "QueryReference[Any, ClassLooseArgs]" in text
    typed = namespace["ClassListArgs"]
    assert typed.__required_keys__ == {"list", "tags", "from"}  # type: ignore[attr-defined]
    assert NoArgs is namespace["NoArgs"]
