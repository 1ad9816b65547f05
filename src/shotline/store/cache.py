"""The content-addressed store: clips by shot key, stitched outputs by render key, and the
pieces outputs are joined from (:class:`Pieces`, by the key of what each is made of).

Files live under ``$SHOTLINE_HOME/store``; a row in ``clips`` or ``outputs`` says the file
is complete (it is written to a temporary name, probed, then renamed before the row is
committed). A row whose file has gone is a miss, never an error, and the file is simply
made again. Vendor URLs are never the cache: they expire; the bytes are.

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
from .db import Database, Money, clips, outputs, upsert


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class StoredClip:
    key: str
    path: Path
    cost_usd: Decimal


class Store:
    """Where clips and outputs are kept, and the rows that say they are complete."""

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = root

    def pieces(self) -> Pieces:
        return Pieces(self.root / "pieces")

    def clip_path(self, key: str) -> Path:
        digest = key.split(":", 1)[1]
        return self.root / "clips" / digest[:2] / f"{digest}.mp4"

    def output_path(self, key: str) -> Path:
        digest = key.split(":", 1)[1]
        return self.root / "outputs" / digest[:2] / f"{digest}.mp4"

    def temp_path(self, final: Path, tag: str) -> Path:
        """A temporary name beside ``final``, unique to this call (see scratch.py).

        ``tag`` (a vendor's job id) is hashed, never trusted as a name. The name is unique
        per call, not per process: a worker runs several renders in one process, and two of
        them may fetch the same shared job at once.
        """
        safe = hashlib.sha256(tag.encode()).hexdigest()[:16]
        return scratch.beside(final.with_name(f"{final.stem}.{safe}"))

    def sweep(self) -> int:
        """Remove what processes killed mid-write left in the store (once per process)."""
        return scratch.sweep_once(self.root)

    def clip(self, key: str, conn: Connection | None = None) -> StoredClip | None:
        """The stored clip for ``key``, if its row and its file are both there."""
        query = sa.select(clips).where(clips.c.key == key)
        if conn is not None:
            row = conn.execute(query).first()
        else:
            with self.db.read() as c:
                row = c.execute(query).first()
        if row is None or not Path(row.path).exists():
            return None
        return StoredClip(key, Path(row.path), Decimal(row.cost_usd))

    def stored(self, keys: Iterable[str]) -> frozenset[str]:
        """Which of ``keys`` have a stored clip (row and file): what a render gets for free."""
        wanted = sorted(set(keys))
        if not wanted:
            return frozenset()
        with self.db.read() as conn:
            rows = conn.execute(sa.select(clips.c.key, clips.c.path)
                                .where(clips.c.key.in_(wanted))).all()
        return frozenset(r.key for r in rows if Path(r.path).exists())

    def put_clip(self, conn: Connection, key: str, tmp: Path, *, seconds: float, provider: str,
                 model: str, cost_usd: Decimal) -> Path:
        """Move a probed file into place and record it, in the caller's transaction."""
        final = self.clip_path(key)
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, final)
        now = time.time()
        # Several renders following one shared job each store its clip: one row either way.
        upsert(conn, clips, dict(key=key, path=str(final), sha256=digest, bytes=size,
                                 seconds=seconds, provider=provider, model=model,
                                 cost_usd=cost_usd, created_at=now, used_at=now),
               keep=("created_at",))
        return final

    def touch(self, conn: Connection, key: str) -> None:
        conn.execute(clips.update().where(clips.c.key == key).values(used_at=time.time()))

    def output(self, key: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(outputs).where(outputs.c.key == key)).first()
        if row is None or not Path(row.path).exists():
            return None
        return dict(row._mapping)

    def put_output(self, conn: Connection, key: str, path: Path, seconds: float,
                   render_id: str) -> None:
        upsert(conn, outputs, dict(key=key, path=str(path), seconds=seconds,
                                   render_id=render_id, created_at=time.time()))

    # --- shotline cache stats | ls | prune ---------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self.db.read() as conn:
            n, size, value = conn.execute(sa.select(
                sa.func.count(), sa.func.coalesce(sa.func.sum(clips.c.bytes), 0),
                sa.func.sum(clips.c.cost_usd, type_=Money()))).one()
            n_out = conn.execute(sa.select(sa.func.count()).select_from(outputs)).scalar_one()
        return {"clips": n, "bytes": int(size), "clips_value_usd": value or Decimal(0),
                "outputs": n_out, "root": str(self.root)}

    def ls(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(clips).order_by(clips.c.used_at.desc()))]

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
                Path(v["path"]).unlink(missing_ok=True)
        return victims


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
