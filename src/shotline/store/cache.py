"""The content-addressed store: clips by shot key, stitched outputs by render key, and the
pieces outputs are joined from (:class:`Pieces`, by the key of what each is made of).

Bytes live in :mod:`.blobs` (``HOME/store`` by default, or an S3-compatible bucket); rows
in ``clips`` and ``outputs`` say an object is complete. An object is written whole (a
temporary file probed, then renamed or uploaded) before its row is committed. A row whose
object has gone is a miss, never an error, and the object is simply made again. Vendor URLs
are never the cache: they expire; the bytes are.

Names (what the ``path`` columns hold): ``clips/ab/<digest>.mp4`` for a shot key,
``outputs/ab/<digest>.mp4`` for a render key, and beside an output its stills
``<digest>.poster.jpg`` and ``<digest>.contact.jpg``. A worker's scratch directory holds
temporary files and copies of objects (content-addressed, so a copy never goes stale);
nothing is only there.

Pieces are derived from clips and can always be made again; a piece is complete once its
metadata JSON is there, which is written after its files.

Nothing is ever pruned automatically: only ``shotline cache prune`` removes entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import scratch
from .blobs import Blobs, LocalBlobs
from .db import Database, Money, clips, outputs, upsert

STILLS = ("poster", "contact")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def still_name(output: str, kind: str) -> str:
    """The name of an output's still (``poster`` or ``contact``), beside the output."""
    base, _, _ = output.rpartition(".")
    return f"{base}.{kind}.jpg"


@dataclass(frozen=True)
class StoredClip:
    key: str
    name: str
    cost_usd: Decimal


@dataclass(frozen=True)
class SavedClip:
    """A clip's object, written; its row is still to be committed."""

    name: str
    sha256: str
    bytes: int


class Store:
    """Where clips and outputs are kept, and the rows that say they are complete."""

    def __init__(self, db: Database, blobs: Blobs, scratch: Path) -> None:
        self.db = db
        self.blobs = blobs
        self.scratch = scratch

    def pieces(self) -> Pieces:
        """The segments made from clips (engine/assembly.py): this machine's, in scratch,
        since any worker can make them again from the stored clips."""
        return Pieces(self.scratch / "pieces")

    @staticmethod
    def clip_name(key: str) -> str:
        digest = key.split(":", 1)[1]
        return f"clips/{digest[:2]}/{digest}.mp4"

    @staticmethod
    def output_name(key: str) -> str:
        digest = key.split(":", 1)[1]
        return f"outputs/{digest[:2]}/{digest}.mp4"

    def scratch_path(self, name: str) -> Path:
        """Where this machine keeps its copy of object ``name`` (an absolute legacy name too)."""
        return self.scratch / "objects" / name.lstrip("/")

    def temp_path(self, name: str, tag: str) -> Path:
        """A temporary file for object ``name`` in scratch, unique to this call (scratch.py).

        ``tag`` (a vendor's job id) is hashed, never trusted as a name. The name is unique
        per call, not per process: a worker runs several renders in one process, and two of
        them may fetch the same shared job at once.
        """
        final = self.scratch_path(name)
        safe = hashlib.sha256(tag.encode()).hexdigest()[:16]
        return scratch.beside(final.with_name(f"{final.name.split('.')[0]}.{safe}"), ".mp4")

    def sweep(self) -> int:
        """Remove what processes killed mid-write left in scratch and in a local store (once
        per process)."""
        swept = scratch.sweep_once(self.scratch)
        if isinstance(self.blobs, LocalBlobs):
            swept += scratch.sweep_once(self.blobs.root)
        return swept

    def file(self, name: str) -> Path:
        """A file on this machine with object ``name``'s bytes: the object itself on local
        storage, else a copy in scratch (fetched once; names are content-addressed)."""
        own = self.blobs.local(name)
        if own is not None:
            return own
        copy = self.scratch_path(name)
        if not copy.is_file() or copy.stat().st_size != self.blobs.size(name):
            self.blobs.fetch(name, copy)
        return copy

    def forget_copy(self, name: str) -> None:
        """Drop this machine's scratch copy of ``name`` (never the object itself)."""
        if self.blobs.local(name) is None:
            self.scratch_path(name).unlink(missing_ok=True)

    def clip(self, key: str, conn: Connection | None = None) -> StoredClip | None:
        """The stored clip for ``key``, if its row and its object are both there."""
        query = sa.select(clips).where(clips.c.key == key)
        if conn is not None:
            row = conn.execute(query).first()
        else:
            with self.db.read() as c:
                row = c.execute(query).first()
        if row is None or not self.blobs.exists(row.path):
            return None
        return StoredClip(key, row.path, Decimal(row.cost_usd))

    def stored(self, keys: Iterable[str]) -> frozenset[str]:
        """Which of ``keys`` have a stored clip (row and object): what a render gets for free."""
        wanted = sorted(set(keys))
        if not wanted:
            return frozenset()
        with self.db.read() as conn:
            rows = conn.execute(sa.select(clips.c.key, clips.c.path)
                                .where(clips.c.key.in_(wanted))).all()
        return frozenset(r.key for r in rows if self.blobs.exists(r.path))

    def save_clip(self, key: str, tmp: Path) -> SavedClip:
        """Write a probed file as ``key``'s object (before its row: see :meth:`record_clip`).

        On S3 a copy stays in scratch, so the stitch on this machine need not fetch it back.
        """
        name = self.clip_name(key)
        saved = SavedClip(name, sha256_file(tmp), tmp.stat().st_size)
        if isinstance(self.blobs, LocalBlobs):
            self.blobs.put(name, tmp)
        else:
            copy = self.scratch_path(name)
            os.replace(tmp, copy)  # both in scratch
            spare = scratch.beside(copy)
            shutil.copyfile(copy, spare)
            self.blobs.put(name, spare)
        return saved

    def record_clip(self, conn: Connection, key: str, saved: SavedClip, *, seconds: float,
                    provider: str, model: str, cost_usd: Decimal) -> None:
        """Record a saved clip, in the caller's transaction."""
        now = time.time()
        # Several renders following one shared job each store its clip: one row either way.
        upsert(conn, clips, dict(key=key, path=saved.name, sha256=saved.sha256,
                                 bytes=saved.bytes, seconds=seconds, provider=provider,
                                 model=model, cost_usd=cost_usd, created_at=now, used_at=now),
               keep=("created_at",))

    def touch(self, conn: Connection, key: str) -> None:
        conn.execute(clips.update().where(clips.c.key == key).values(used_at=time.time()))

    def output(self, key: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(outputs).where(outputs.c.key == key)).first()
        if row is None or not self.blobs.exists(row.path):
            return None
        return dict(row._mapping)

    def save_output(self, key: str, video: Path) -> str:
        """Write a verified output and its stills (beside it, named as :func:`still_name`
        says) as ``key``'s objects, stills first; the name of the output's object."""
        name = self.output_name(key)
        for kind in STILLS:
            self.blobs.put(still_name(name, kind), Path(still_name(str(video), kind)))
        self.blobs.put(name, video)
        return name

    def put_output(self, conn: Connection, key: str, name: str, seconds: float,
                   render_id: str) -> None:
        upsert(conn, outputs, dict(key=key, path=name, seconds=seconds,
                                   render_id=render_id, created_at=time.time()))

    def output_files(self, name: str) -> tuple[Path, Path, Path]:
        """Files on this machine with an output's bytes and its stills (see :meth:`file`)."""
        return (self.file(name), self.file(still_name(name, "poster")),
                self.file(still_name(name, "contact")))

    # --- shotline cache stats | ls | prune ---------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self.db.read() as conn:
            n, size, value = conn.execute(sa.select(
                sa.func.count(), sa.func.coalesce(sa.func.sum(clips.c.bytes), 0),
                sa.func.sum(clips.c.cost_usd, type_=Money()))).one()
            n_out = conn.execute(sa.select(sa.func.count()).select_from(outputs)).scalar_one()
        return {"clips": n, "bytes": int(size), "clips_value_usd": value or Decimal(0),
                "outputs": n_out, "root": self.blobs.where}

    def ls(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                sa.select(clips).order_by(clips.c.used_at.desc()))]
        return [{**r, "path": self.blobs.address(r["path"])} for r in rows]

    def prune(self, older_than_days: float, dry_run: bool = False) -> list[dict[str, Any]]:
        """Remove clips not used for ``older_than_days``; returns what was (or would be) removed."""
        cutoff = time.time() - older_than_days * 86400
        with self.db.write() as conn:
            victims = [dict(r._mapping) for r in conn.execute(
                sa.select(clips).where(clips.c.used_at < cutoff))]
            if not dry_run and victims:
                conn.execute(clips.delete().where(clips.c.key.in_([v["key"] for v in victims])))
        if not dry_run:
            for v in victims:
                self.blobs.delete(v["path"])
                self.forget_copy(v["path"])
        return [{**v, "path": self.blobs.address(v["path"])} for v in victims]


class Pieces:
    """A directory of pieces by key: ``<root>/<2 hex>/<64 hex><suffix>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str, suffix: str) -> Path:
        hexdigest = key.split(":", 1)[1]
        return self.root / hexdigest[:2] / f"{hexdigest}{suffix}"

    def meta(self, key: str) -> dict[str, Any] | None:
        """The metadata of a finished piece, or None if it is not (all) there."""
        path = self.path(key, ".json")
        try:
            data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if not all(self.path(key, suffix).exists() for suffix in data.get("files", [])):
            return None
        os.utime(path)  # last use, for pruning
        return data

    @contextmanager
    def making(self, key: str, suffix: str) -> Iterator[Path]:
        """A temporary path to write a piece to; it takes its key's name if the block succeeds."""
        final = self.path(key, suffix)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch.beside(final, suffix)  # a killed process's half-piece is swept later
        try:
            yield tmp
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def finish(self, key: str, data: dict[str, Any]) -> None:
        """Write the metadata that marks a piece (and the files it lists) as complete."""
        final = self.path(key, ".json")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch.beside(final, ".json")
        try:
            tmp.write_text(json.dumps(data, sort_keys=True), "utf-8")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def prune(self, older_than_days: float, dry_run: bool = False) -> int:
        """Remove pieces not used for ``older_than_days`` (they are made again when needed)."""
        cutoff = time.time() - older_than_days * 86400
        removed = 0
        for meta in self.root.glob("*/*.json"):
            try:
                if meta.stat().st_mtime >= cutoff:
                    continue
                files = json.loads(meta.read_text("utf-8")).get("files", [])
            except (OSError, json.JSONDecodeError):
                continue
            removed += 1
            if dry_run:
                continue
            meta.unlink(missing_ok=True)  # first, so a half-removed piece is never "complete"
            for suffix in files:
                (meta.parent / f"{meta.stem}{suffix}").unlink(missing_ok=True)
        # Thumbnails (complete once present) and what a killed process left half-written.
        for loose in [*self.root.glob("*/*.jpg"), *self.root.glob("*/.*")]:
            try:
                old = loose.stat().st_mtime < cutoff
            except OSError:
                continue
            if old and not dry_run:
                loose.unlink(missing_ok=True)
        return removed


def copy_atomic(src: Path, dest: Path) -> Path:
    tmp = scratch.beside(dest)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
