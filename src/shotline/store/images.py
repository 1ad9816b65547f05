"""Input images (cast pictures, first and last frames) by the hash of their bytes.

A render's images are written in the transaction that opens (or queues) the render, and
read by whoever renders it: the process that planned it, a worker on another machine, or
a resumed run. They live in the database, not on a disk, so every worker can read them.

* A row never changes: its key is the SHA-256 of its data, so two renders (or processes)
  writing the same image write the same values (:func:`~.db.upsert`, one statement).
* Nothing here trusts a row: the engine checks every image's bytes against its key before
  it is sent (``providers.base.ImageInput``).
* Rows are never pruned: an image costs kilobytes, and a render (or a re-roll) may need it
  again at any time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.brief import ImageRef
from .db import Database, images, upsert


def put(conn: Connection, refs: Iterable[ImageRef], data: Mapping[str, bytes]) -> None:
    """Store each image of ``refs`` whose bytes ``data`` holds, in the caller's transaction."""
    now = time.time()
    for ref in {r.sha256: r for r in refs}.values():
        blob = data.get(ref.sha256)
        if blob is None:
            continue  # stored already by the render this one resumes
        upsert(conn, images, dict(sha256=ref.sha256, mime=ref.mime, width=ref.width,
                                  height=ref.height, bytes=len(blob), data=blob,
                                  created_at=now), keep=("created_at",))


def load(db: Database, digests: Iterable[str]) -> dict[str, bytes]:
    """The bytes of every stored image among ``digests``, by digest (absent if not stored)."""
    wanted = sorted(set(digests))
    if not wanted:
        return {}
    with db.read() as conn:
        rows = conn.execute(sa.select(images.c.sha256, images.c.data)
                            .where(images.c.sha256.in_(wanted))).all()
    return {r.sha256: bytes(r.data) for r in rows}
