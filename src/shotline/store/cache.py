"""The content-addressed store: clips by shot key, stitched outputs by render key.

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

Nothing is ever pruned automatically: only ``shotline cache prune`` removes entries.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

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
        """A temporary file for object ``name`` in scratch, unique to this call.

        ``tag`` (a vendor's job id) is hashed, never trusted as a name. The name is unique
        per call, not per process: a worker runs several renders in one process, and two of
        them may fetch the same shared job at once.
        """
        final = self.scratch_path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        safe = hashlib.sha256(tag.encode()).hexdigest()[:16]
        stem = final.name.split(".")[0]
        return final.with_name(f".{stem}.{os.getpid()}.{safe}.{uuid.uuid4().hex[:8]}.part.mp4")

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
            spare = copy.with_name(f".{copy.name}.{uuid.uuid4().hex[:8]}.up")
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


def copy_atomic(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return dest
