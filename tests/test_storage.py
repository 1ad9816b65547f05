"""The object store (local directory and S3-compatible bucket), provider slots shared by
every worker, and the stitch lease: fast, in-process, against moto's server and both
databases."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from shotline.api import open_store, render
from shotline.errors import ConfigError
from shotline.service.server import _byte_range
from shotline.settings import Settings
from shotline.store import lifecycle, slots
from shotline.store.blobs import Blobs, LocalBlobs, S3Blobs, open_blobs
from shotline.store.db import Database

from .scaleout import CREDENTIALS, S3


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Blobs:
    if request.param == "local":
        return LocalBlobs(tmp_path / "store")
    request.getfixturevalue("aws")
    server: S3 = request.getfixturevalue("s3")
    return S3Blobs(server.new_bucket(), "/some/prefix/", server.endpoint)


def test_objects_are_put_whole_read_by_range_fetched_and_deleted(blobs: Blobs,
                                                                 tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    src = tmp_path / "src.mp4"
    src.write_bytes(data)
    name = "clips/ab/abcdef.mp4"
    assert not blobs.exists(name) and blobs.size(name) is None
    blobs.put(name, src)
    assert not src.exists()  # consumed
    assert blobs.exists(name) and blobs.size(name) == len(data)
    assert b"".join(blobs.read(name, 100, 1099)) == data[100:1100]
    copy = blobs.fetch(name, tmp_path / "copy" / "x.mp4")
    assert copy.read_bytes() == data
    assert not list(copy.parent.glob(".*"))  # no temporary file left beside it
    url = blobs.presign(name, 60, "r_1-output.mp4")
    if isinstance(blobs, S3Blobs):
        assert blobs.address(name).startswith(f"s3://{blobs.bucket}/some/prefix/clips/")
        assert url is not None
        got = httpx.get(url, headers={"Range": "bytes=0-9"})
        assert got.status_code == 206 and got.content == data[:10]
    else:
        assert url is None and blobs.local(name) == tmp_path / "store" / name
    blobs.delete(name)
    assert not blobs.exists(name)
    blobs.check()  # a usable place passes


def test_a_missing_bucket_or_a_bad_url_is_a_config_error(s3: S3, aws: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bucket 'nope-nope' at http://127.0.0.1.* does not exist"):
        S3Blobs("nope-nope", "", s3.endpoint).check()
    with pytest.raises(ConfigError, match="is not s3://BUCKET/PREFIX"):
        open_blobs(Settings(home=tmp_path, storage="/var/videos"))
    assert isinstance(open_blobs(Settings(home=tmp_path)), LocalBlobs)


def test_byte_ranges_as_http_reads_them() -> None:
    assert _byte_range(None, 100) is None
    assert _byte_range("bytes=10-19", 100) == (10, 19)
    assert _byte_range("bytes=90-", 100) == (90, 99)
    assert _byte_range("bytes=95-500", 100) == (95, 99)
    assert _byte_range("bytes=-10", 100) == (90, 99)
    assert _byte_range("bytes=-500", 100) == (0, 99)
    assert _byte_range("bytes=100-", 100) == "unsatisfiable"
    assert _byte_range("bytes=20-10", 100) == "unsatisfiable"
    assert _byte_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole file
    assert _byte_range("items=0-1", 100) is None


@pytest.mark.slow
def test_a_library_render_keeps_its_media_in_the_bucket(s3: S3, aws: None, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    settings = Settings(home=tmp_path / "h", storage=f"s3://{bucket}/p", s3_endpoint_url=s3.endpoint,
                        poll_interval=0.05)
    brief = "Shot 1: A heron lands.\n\nShot 2: It takes a fish."
    first = render(brief, seconds=2, size="640x360", settings=settings)
    assert first.output.is_file() and first.poster.is_file()  # local copies for the caller
    keys = set(s3.keys(bucket))
    assert {f"p/{first.shots[0].stored}", f"p/{first.shots[1].stored}"} <= keys
    assert sum(k.startswith("p/outputs/") for k in keys) == 3  # the output and its stills
    assert not (tmp_path / "h" / "store").exists()  # nothing kept on the local store
    # Another machine (an empty home) with the same database and bucket reopens it free.
    again = render(brief, seconds=2, size="640x360",
                   settings=settings.model_copy(update={"home": tmp_path / "h2",
                                                        "database_url": _db_url(settings)}))
    assert again.reopened and again.output.read_bytes() == first.output.read_bytes()


def _db_url(settings: Settings) -> str:
    db, _ = open_store(settings)
    try:
        return db.url
    finally:
        db.close()


def test_provider_slots_hold_the_limit_across_workers(any_db: Database) -> None:
    now = time.time()
    with any_db.write() as conn:
        assert slots.acquire(conn, "fal", "k1", 2, 60, now)
        assert slots.acquire(conn, "fal", "k2", 2, 60, now)
        assert not slots.acquire(conn, "fal", "k3", 2, 60, now)  # the limit
        assert slots.acquire(conn, "fal", "k1", 2, 60, now)  # its own slot, kept
        assert slots.acquire(conn, "runway", "k4", 1, 60, now)  # another provider's count
        assert slots.in_use(conn, "fal", now) == 2
    with any_db.write() as conn:
        slots.release(conn, "k1")
        assert slots.acquire(conn, "fal", "k3", 2, 60, now)
        # A holder that stopped renewing (a killed worker) lapses: its slot is free again.
        assert slots.acquire(conn, "fal", "k5", 2, 60, now + 61)
        assert slots.in_use(conn, "fal", now + 61) == 1


def _render_row(db: Database) -> str:
    with db.write() as conn:
        return lifecycle.open_render(conn, "sha256:r", "local/sim", "b", {"shots": []},
                                     ["sha256:s"], Decimal(0))


def test_one_task_of_two_gets_to_stitch_until_its_lease_lapses(any_db: Database) -> None:
    render_id = _render_row(any_db)
    now = time.time()
    with any_db.write() as conn:
        assert lifecycle.claim_stitch(conn, render_id, "a", 30, now) is None
    with any_db.write() as conn:  # a redelivered task: told when to look again
        assert lifecycle.claim_stitch(conn, render_id, "b", 30, now + 1) == pytest.approx(now + 30)
    with any_db.write() as conn:  # the first stitcher died: after its lease, the next one
        assert lifecycle.claim_stitch(conn, render_id, "b", 30, now + 31) is None
        assert not lifecycle.transition(conn, render_id, "stitching", owner="a")  # fenced
        assert lifecycle.transition(conn, render_id, "stitching", owner="b")


def test_a_step_survives_a_task_message() -> None:
    from shotline.engine.renderer import Step

    step = Step("poll", delay=2.5, job={"provider": "local", "job_id": "loc_1", "data": {}},
                attempt=2, started=1.0, renewed=2.0)
    raw: Any = json.loads(json.dumps(step.to_json()))
    assert Step.from_json(raw) == step and not step.final and Step("done").final
    # A message written by a newer version (a field more) is still read during an upgrade.
    assert Step.from_json({**raw, "added_later": 1}) == step


def test_progress_never_moves_a_finished_shot_back(any_db: Database) -> None:
    # A redelivered step of a shot another task finished reports progress: the fan-in must
    # still see the shot finished.
    render_id = _render_row(any_db)
    with any_db.write() as conn:
        lifecycle.set_shot(conn, render_id, 0, state="done")
        lifecycle.shot_progress(conn, render_id, 0, "rendering", 0.5)
        assert lifecycle.unfinished_shots(conn, render_id) == []
        lifecycle.begin_shots(conn, render_id, [0])  # a new run of the shot: pending again
        lifecycle.shot_progress(conn, render_id, 0, "rendering", 0.5)
        assert lifecycle.unfinished_shots(conn, render_id) == [0]


def test_a_silent_render_is_taken_for_requeueing_once(any_db: Database) -> None:
    now = time.time()
    with any_db.write() as conn:
        quiet = lifecycle.enqueue(conn, tenant=None, key="sha256:q", model="local/sim", brief="b",
                                  plan={"shots": []}, shot_keys=["sha256:s"], estimate=Decimal(0),
                                  options={}, webhook_url=None, auto_approve=False,
                                  max_usd=None, now=now - 100)
        busy = lifecycle.enqueue(conn, tenant=None, key="sha256:b", model="local/sim", brief="b",
                                 plan={"shots": []}, shot_keys=["sha256:t"], estimate=Decimal(0),
                                 options={}, webhook_url=None, auto_approve=False,
                                 max_usd=None, now=now - 100)
        lifecycle.append_event(conn, busy, "shot", {"index": 1, "state": "rendering"}, now - 1)
    with any_db.read() as conn:
        assert lifecycle.stalled(conn, now - 60) == [quiet]
    with any_db.write() as conn:
        assert lifecycle.take_stalled(conn, quiet, now - 60) == "sha256:q"
    with any_db.write() as conn:  # a second watchdog right after finds it live again
        assert lifecycle.take_stalled(conn, quiet, now - 60) is None
        assert lifecycle.stalled(conn, now - 60) == []
