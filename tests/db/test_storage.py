"""File storage, embedded: ``ctx.storage`` (store/get/delete/get_url/generate_upload_url),
``_storage`` documents, content-addressed bytes (dedupe, removal after delete), the sweep
of crash garbage, upload tokens, ids, and export/import with files on every backend.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.db.storage import STORAGE, FileStore, StorageError, UploadUrlError
from reactive.errors import ArgumentValidationError, InvalidIdError
from reactive.snapshot import export_snapshot, import_snapshot

MakeApp = Callable[[dict[str, str]], Path]

APP = {
    "files.py": """
        from reactive import action, mutation, query, v


        @action(args={"data": v.bytes(), "type": v.optional(v.string())})
        async def put(ctx, data, type=None):
            return await ctx.storage.store(data, type)


        @action(args={"id": v.string()})
        async def read(ctx, id):
            return await ctx.storage.get(id)


        @action(args={"id": v.id("_storage")})
        async def read_typed(ctx, id):
            return await ctx.storage.get(id)


        @action(args={"id": v.id("_storage")})
        async def remove(ctx, id):
            await ctx.storage.delete(id)


        @mutation(args={"id": v.id("_storage"), "fail": v.boolean()})
        async def remove_in_mutation(ctx, id, fail):
            await ctx.storage.delete(id)
            if fail:
                raise ValueError("rolled back, and the delete with it")


        @mutation(args={})
        async def upload_url(ctx):
            return await ctx.storage.generate_upload_url()


        @query(args={"id": v.id("_storage")})
        async def url(ctx, id):
            return await ctx.storage.get_url(id)


        @query(args={"id": v.string()})
        async def meta(ctx, id):
            return await ctx.db.system.get(id)


        @query(args={})
        async def all_files(ctx):
            return await ctx.db.system.query("_storage").collect()


        @mutation(args={"file": v.id("_storage"), "name": v.string()})
        async def attach(ctx, file, name):
            return await ctx.db.insert("photos", {"file": file, "name": name})


        @query(args={})
        async def photos(ctx):
            return await ctx.db.query("photos").collect()


        @mutation(args={})
        async def make_table(ctx):
            await ctx.db.insert("other", {"x": 1.0})
            return await ctx.db.insert("other2", {"x": 1.0})
    """,
}


def files_of(db: reactive.Database) -> FileStore:
    assert db._files is not None
    return db._files


def content_files(db: reactive.Database) -> list[Path]:
    top = files_of(db).directory
    return [p for p in top.rglob("*") if p.is_file() and p.parent.name != "tmp"]


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql"])
async def test_store_get_delete_and_the_storage_documents(
    kind: str, backend_urls: Callable[[str], str], make_app: MakeApp, tmp_path: Path
) -> None:
    url = backend_urls(kind)
    app = make_app(APP)
    data = os.urandom(3 << 20)  # over one chunk: streamed, hashed as it goes
    async with reactive.open(url, app=app, storage_dir=tmp_path / f"files-{kind}") as db:
        first = await db.action("files:put", {"data": data, "type": "image/png"})
        second = await db.action("files:put", {"data": data})
        doc = await db.query("files:meta", {"id": first})
        assert doc == {
            "_id": first,
            "_creationTime": doc["_creationTime"],
            "contentType": "image/png",
            "sha256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
            "size": float(len(data)),
        }
        assert "contentType" not in await db.query("files:meta", {"id": second})
        assert len(await db.query("files:all_files", {})) == 2
        assert await db.action("files:read", {"id": first}) == data
        assert len(content_files(db)) == 1  # identical bytes are stored once
        await db.action("files:remove", {"id": first})
        assert await db.action("files:read", {"id": first}) is None
        assert await db.query("files:meta", {"id": first}) is None
        assert await db.action("files:read", {"id": second}) == data  # still referenced
        assert len(content_files(db)) == 1
        await db.action("files:remove", {"id": second})
        await db.action("files:remove", {"id": second})  # deleting twice does nothing
        assert content_files(db) == []  # the last reference went: so did the bytes
    async with reactive.open(url, app=app, storage_dir=tmp_path / f"files-{kind}") as db:
        kept = await db.action("files:put", {"data": b"after a restart"})
        assert await db.action("files:read", {"id": kept}) == b"after a restart"


async def test_a_mutation_deletes_in_its_transaction(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        file_id = await db.action("files:put", {"data": b"abc"})
        with pytest.raises(ValueError, match="rolled back"):
            await db.mutation("files:remove_in_mutation", {"id": file_id, "fail": True})
        assert await db.action("files:read", {"id": file_id}) == b"abc"
        assert len(content_files(db)) == 1
        await db.mutation("files:remove_in_mutation", {"id": file_id, "fail": False})
        assert await db.action("files:read", {"id": file_id}) is None
        assert content_files(db) == []


async def test_the_sweep_removes_what_a_crash_left(db_url: str, make_app: MakeApp) -> None:
    app = make_app(APP)
    async with reactive.open(db_url, app=app) as db:
        kept = await db.action("files:put", {"data": b"kept"})
        top = files_of(db).directory
    # A crash mid-upload leaves a temporary file; one after the rename but before the
    # document committed leaves content no document references.
    (top / "tmp").mkdir(exist_ok=True)
    (top / "tmp" / "half-written").write_bytes(b"par")
    orphan = hashlib.sha256(b"orphan").hexdigest()
    (top / orphan[:2] / orphan[2:4]).mkdir(parents=True, exist_ok=True)
    (top / orphan[:2] / orphan[2:4] / orphan).write_bytes(b"orphan")
    (top / "README").write_text("not ours: left alone")
    async with reactive.open(db_url, app=app) as db:
        assert list((top / "tmp").iterdir()) == []
        assert not (top / orphan[:2] / orphan[2:4] / orphan).exists()
        assert (top / "README").exists()
        assert await db.action("files:read", {"id": kept}) == b"kept"


async def test_two_databases_in_one_folder_keep_their_files_apart(
    tmp_path: Path, make_app: MakeApp
) -> None:
    app = make_app(APP)
    async with reactive.open(f"sqlite:///{tmp_path / 'a.db'}", app=app) as a:
        file_id = await a.action("files:put", {"data": b"from a"})
    async with reactive.open(f"sqlite:///{tmp_path / 'b.db'}", app=app) as b:
        assert files_of(b).root == tmp_path / "storage"
    async with reactive.open(f"sqlite:///{tmp_path / 'a.db'}", app=app) as a:
        assert await a.action("files:read", {"id": file_id}) == b"from a"


async def test_ids_are_checked(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        file_id = await db.action("files:put", {"data": b"x"})
        other = await db.mutation("files:make_table", {})
        with pytest.raises(InvalidIdError, match="not a storage id"):
            await db.action("files:read", {"id": "not-an-id"})
        with pytest.raises(InvalidIdError, match="not a storage id"):
            await db.action("files:read", {"id": other})
        with pytest.raises(ArgumentValidationError):
            await db.action("files:read_typed", {"id": other})
        assert await db.action("files:read_typed", {"id": file_id}) == b"x"


async def test_urls_need_a_server(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        file_id = await db.action("files:put", {"data": b"x"})
        with pytest.raises(StorageError, match="need a server"):
            await db.mutation("files:upload_url", {})
        with pytest.raises(StorageError, match="need a server"):
            await db.query("files:url", {"id": file_id})
        db.public_url = "http://files.example:3210/"
        assert await db.query("files:url", {"id": file_id}) == (
            f"http://files.example:3210/api/storage/{file_id}"
        )
        upload = await db.mutation("files:upload_url", {})
        assert upload.startswith("http://files.example:3210/api/storage/upload?token=")
        await db.action("files:remove", {"id": file_id})
        assert await db.query("files:url", {"id": file_id}) is None


async def test_upload_tokens_are_signed_expire_and_are_single_use(
    db_url: str, make_app: MakeApp
) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        files = files_of(db)
        token = files.upload_token()
        nonce, expires = files.check_token(token)
        forged = token[:-1] + ("0" if token[-1] != "0" else "1")
        for bad in (forged, "", "1.2", None, "99999999999.x.y"):
            with pytest.raises(UploadUrlError) as refused:
                files.check_token(bad)
            assert refused.value.code == "InvalidUploadUrl"
        with pytest.raises(UploadUrlError) as expired:
            files.check_token(files.upload_token(validity_s=-1))
        assert expired.value.code == "UploadUrlExpired"

        async def body(data: bytes) -> Any:
            yield data

        file_id = await files.save(body(b"once"), "text/plain", upload=(nonce, expires))
        assert files.token_used(nonce)
        with pytest.raises(UploadUrlError) as used:
            await files.save(body(b"twice"), "text/plain", upload=(nonce, expires))
        assert used.value.code == "UploadUrlUsed"
        assert [d["_id"] for d in await db.query("files:all_files", {})] == [file_id]
        assert len(content_files(db)) == 1  # the refused upload's bytes went


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql"])
async def test_export_and_import_with_files(
    kind: str, backend_urls: Callable[[str], str], make_app: MakeApp, tmp_path: Path
) -> None:
    app = make_app(APP)
    path = tmp_path / "snap.zip"
    source = f"sqlite:///{tmp_path / 'a.db'}"
    async with reactive.open(source) as db:
        db._engine.create_table("photos")  # a user table before the system tables
    async with reactive.open(source, app=app) as db:
        png = await db.action("files:put", {"data": b"\x89PNG...", "type": "image/png"})
        raw = await db.action("files:put", {"data": b"raw bytes"})
        await db.mutation("files:attach", {"file": png, "name": "cat"})
        await db.mutation("files:attach", {"file": raw, "name": "blob"})
        without = await export_snapshot(db, tmp_path / "plain.zip")
        report = await export_snapshot(db, path, include_storage=True)
    assert without.files == 0 and report.files == 2
    with zipfile.ZipFile(path) as zf:
        metas = [json.loads(x) for x in zf.read("_storage/documents.jsonl").splitlines()]
        assert zf.read(f"_storage/{png}.png") == b"\x89PNG..."
        assert zf.read(f"_storage/{raw}") == b"raw bytes"
    assert {m["_id"] for m in metas} == {png, raw}
    assert {m["size"] for m in metas} == {7, 9}  # integers, as Convex writes them
    with zipfile.ZipFile(tmp_path / "plain.zip") as zf:
        assert not any(n.startswith("_storage/") for n in zf.namelist())

    # A database whose _storage gets another table number: new ids, and the references
    # in the imported documents are rewritten to them.
    url = backend_urls(kind)
    storage = tmp_path / f"b-{kind}"
    async with reactive.open(url, storage_dir=storage) as db:
        db._engine.create_table_numbered("elsewhere", 20000)
        imported = await import_snapshot(db, path)
        assert imported.files == 2 and not imported.storage_ids_kept
        with pytest.raises(Exception, match="already has"):
            await import_snapshot(db, path)
    async with reactive.open(url, app=app, storage_dir=storage) as db:
        photos = {p["name"]: p["file"] for p in await db.query("files:photos", {})}
        assert png not in photos.values()
        assert await db.action("files:read_typed", {"id": photos["cat"]}) == b"\x89PNG..."
        assert await db.action("files:read_typed", {"id": photos["blob"]}) == b"raw bytes"
        meta = await db.query("files:meta", {"id": photos["cat"]})
        assert meta["contentType"] == "image/png"

    # A database made the same way as the source: the ids are kept.
    target = f"sqlite:///{tmp_path / 'c.db'}"
    async with reactive.open(target) as db:
        db._engine.create_table("photos")
    async with reactive.open(target, app=app) as db:
        imported = await import_snapshot(db, path, mode="append")
        assert imported.storage_ids_kept
        assert await db.action("files:read_typed", {"id": png}) == b"\x89PNG..."
        assert {p["file"] for p in await db.query("files:photos", {})} == {png, raw}


async def test_a_tampered_file_is_refused_on_import(tmp_path: Path, make_app: MakeApp) -> None:
    app = make_app(APP)
    path = tmp_path / "snap.zip"
    async with reactive.open(f"sqlite:///{tmp_path / 'a.db'}", app=app) as db:
        file_id = await db.action("files:put", {"data": b"genuine"})
        await export_snapshot(db, path, include_storage=True)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, b"tampered" if name == f"_storage/{file_id}" else data)
    async with reactive.open(f"sqlite:///{tmp_path / 'b.db'}", app=app) as db:
        with pytest.raises(Exception, match="SHA-256"):
            await import_snapshot(db, bad)
        assert await db.query("files:all_files", {}) == []
        assert content_files(db) == []
    assert STORAGE == "_storage"
