"""The ``local`` provider: an offline text-to-video "vendor" that draws free animatics.

It behaves like a remote vendor: ``submit`` returns a job id at once, ``poll`` reports the
job queued, then running, until ``settings.local_latency`` seconds have passed since the
submit, then renders the clip (see :mod:`.local_render`) and reports it succeeded;
``download`` copies the file. Invariants:

* Jobs persist. ``submit`` writes ``LOCAL_DIR/jobs/<job_id>.json`` (request, submit time,
  latency, scripted fault) before it returns; everything else reads only that file and
  ``LOCAL_DIR/out``, so any process, after a restart too, can carry on another's job.
  ``LOCAL_DIR`` (``settings.local_root``, default ``HOME/local``) and the journal may be on
  a disk several workers share: it then stands in for one remote vendor.
  Readiness is wall-clock time against the job file, never in-process state.
* A job renders at most once: under a per-job ``flock``, into a temporary file that is
  ``os.replace``-d into place, so concurrent polls from several processes are safe.
* The journal (``settings.journal_path``) is append-only: one JSON line per submit received,
  written with ``O_APPEND`` in a single ``write``, so lines from concurrent processes never
  interleave. Refused submits (429, 500, moderation) are journaled with ``accepted: false``
  and no job id: they created no job.
  The journal is independent of everything else shotline stores; see :func:`read_journal`.
* Output is deterministic: the clip depends only on the request (and the job's format
  variants), never on the job id, the time or HOME; the same request gives the same bytes.
* Input images are honoured as a vendor would: a first frame is the clip's first frame, a
  last frame its last, and reference images are drawn as thumbnails, each with its cast
  member's name, beside the shot's cast. ``submit`` keeps their bytes under
  ``HOME/local/images`` (named by hash, like a vendor's upload store) and the job file
  names them by hash, so any process can render the job later. The journal line records
  each image's hash and role, so a test can see exactly what a call carried.

Scripted faults, for tests (``settings.local_faults``, env ``SHOTLINE_LOCAL_FAULTS``)::

    SPEC  = RULE {"," RULE}                 e.g.  shot2:429/2:x1,prompt~storm:fail,*:fps=30
    RULE  = WHEN ":" WHAT [":x" N]          ":xN": only the first N submits the rule picks,
                                            counted across processes (LOCAL_DIR/faults.json)
    WHEN  = "*"                             every request
          | "shot" N                        the shot numbered N, 1-based, and each of its takes
          | "prompt~" WORD                  prompts containing WORD (any case; no "," or ":")
    WHAT  = ITEM {"+" ITEM}                 at most one fault, any number of variants

Each submit takes the first rule, in order, whose WHEN matches and whose count is not used
up; the others are ignored. Faults:

    429[/S]          submit raises RetryableError (Retry-After S seconds if given); no job
    500              submit raises RetryableError; no job
    moderation       submit raises PermanentError, reason "moderation: ..."; no job
    timeout          the job is created and journaled, then submit raises AmbiguousSubmitError
                     (``find(request)`` returns the job, as a vendor's lookup by key would)
    fail             accepted; after the latency, poll reports failed, retryable=True
    moderation/poll  accepted; after the latency, poll reports failed, retryable=False,
                     error "moderation: ..."
    hang             accepted; poll reports running forever
    truncate         download writes the first half of the clip
    corrupt          download writes the clip's ftyp box, then random bytes (same length)

Variants change the clip the job delivers, as another vendor's output might differ:
``fps=N`` (1..120), ``size=WxH`` (even sides, up to 4096), ``pix=yuv420p|yuv444p``,
``codec=h264|hevc``, ``arate=N`` (an AAC sample rate, 8000..96000), ``mono``, ``noaudio``,
``audio`` (a track even if none was asked for) and ``shortaudio`` (audio half as long as
the video), e.g. ``shot2:codec=hevc+fps=30+arate=44100+mono`` or ``*:truncate+fps=30``.

A rule's uses are counted under its text, so editing a rule starts a fresh count. The fault,
variants and latency are fixed in the job file at submit: whoever polls later sees the same
job. A malformed spec raises ``ConfigError`` when the provider is constructed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from .. import scratch
from ..errors import AmbiguousSubmitError, ConfigError, MediaError, PermanentError, RetryableError
from ..settings import Settings
from .base import BaseProvider, JobRef, JobState, JobStatus, ShotRequest
from .local_render import Look, render

# --------------------------------------------------------------------------- fault spec

FAULTS = ("429", "500", "moderation", "timeout", "fail", "moderation/poll", "hang", "truncate",
          "corrupt")
FLAGS: dict[str, dict[str, Any]] = {
    "mono": {"channels": 1}, "noaudio": {"audio": False}, "audio": {"audio": True},
    "shortaudio": {"audio_ratio": 0.5},
}
AAC_RATES = ("8000", "11025", "12000", "16000", "22050", "24000", "32000", "44100", "48000",
             "64000", "88200", "96000")
CHOICES = {"pix": ("pix_fmt", ("yuv420p", "yuv444p")), "codec": ("codec", ("h264", "hevc"))}
GRAMMAR = (
    "rules are WHEN:WHAT or WHEN:WHAT:xN, comma-separated; WHEN is *, shotN or prompt~WORD; "
    "WHAT is one fault (429, 429/S, 500, moderation, timeout, fail, moderation/poll, hang, "
    "truncate, corrupt) and/or variants joined by + (fps=N, size=WxH, pix=yuv420p|yuv444p, "
    "codec=h264|hevc, arate=N, mono, noaudio, audio, shortaudio)"
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One parsed rule; ``variants`` are :class:`Look` field overrides."""

    text: str
    shot: int | None = None
    word: str | None = None
    fault: str | None = None
    retry_after: float | None = None
    variants: dict[str, Any] = dataclasses.field(default_factory=dict)
    limit: int | None = None

    def matches(self, request: ShotRequest) -> bool:
        if self.shot is not None:
            return request.number == self.shot
        return self.word is None or self.word.casefold() in request.prompt.casefold()


def parse_faults(spec: str) -> tuple[Rule, ...]:
    """Parse a fault spec (grammar in the module docstring); raise ConfigError if malformed."""
    rules = []
    for text in (part.strip() for part in spec.split(",")):
        if not text:
            continue
        try:
            rules.append(_parse_rule(text))
        except ValueError as exc:
            raise ConfigError(f"SHOTLINE_LOCAL_FAULTS: bad rule {text!r}: {exc}. "
                              f"Allowed: {GRAMMAR}") from None
    return tuple(rules)


def _parse_rule(text: str) -> Rule:
    parts = [p.strip() for p in text.split(":")]
    if len(parts) not in (2, 3):
        raise ValueError("want WHEN:WHAT or WHEN:WHAT:xN")
    limit = None
    if len(parts) == 3:
        if not re.fullmatch(r"x[1-9][0-9]*", parts[2]):
            raise ValueError(f"the count {parts[2]!r} is not xN with N >= 1")
        limit = int(parts[2][1:])
    fault, retry_after, variants = _parse_what(parts[1])
    if parts[0] == "*":
        return Rule(text, fault=fault, retry_after=retry_after, variants=variants, limit=limit)
    if m := re.fullmatch(r"shot([1-9][0-9]*)", parts[0]):
        return Rule(text, int(m[1]), None, fault, retry_after, variants, limit)
    if parts[0].startswith("prompt~") and parts[0][7:].strip():
        return Rule(text, None, parts[0][7:].strip(), fault, retry_after, variants, limit)
    raise ValueError(f"WHEN {parts[0]!r} is not *, shotN (N >= 1) or prompt~WORD")


def _parse_what(what: str) -> tuple[str | None, float | None, dict[str, Any]]:
    fault: str | None = None
    retry_after: float | None = None
    variants: dict[str, Any] = {}
    for item in (i.strip() for i in what.split("+")):
        name = item.split("/")[0] if item.startswith("429/") else item
        if name in FAULTS:
            if fault is not None:
                raise ValueError(f"two faults ({fault}, {item}) in one rule; use one")
            fault = name
            if item != name:
                retry_after = _number(item[4:], "the Retry-After in 429/S", float, 0, 3600)
        elif item in FLAGS:
            variants.update(FLAGS[item])
        elif "=" in item:
            variants.update(_parse_variant(*item.split("=", 1)))
        else:
            raise ValueError(f"{item!r} is neither a fault nor a variant" if item else "empty WHAT")
    return fault, retry_after, variants


def _parse_variant(key: str, value: str) -> dict[str, Any]:
    if key in CHOICES:
        field, allowed = CHOICES[key]
        if value not in allowed:
            raise ValueError(f"{key}={value}: want one of {', '.join(allowed)}")
        return {field: value}
    if key == "fps":
        return {"fps": _number(value, key, int, 1, 120)}
    if key == "arate" and value in AAC_RATES:
        return {"audio_rate": int(value)}
    if key == "size" and (m := re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", value)):
        width, height = int(m[1]), int(m[2])
        if width % 2 == 0 and height % 2 == 0 and max(width, height) <= 4096:
            return {"width": width, "height": height}
    raise ValueError(f"unknown or malformed variant {key}={value}")


def _number(text: str, what: str, kind: type[int] | type[float], low: int, high: int) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"{what}: {text} is not in {low}..{high}")
    return value


# --------------------------------------------------------------------------- files


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, held for the block (blocks until granted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically: readers see the old file or the new one, never a part.

    Paths (a request's first and last frames) are written as strings.
    """
    tmp = scratch.beside(path)
    try:
        tmp.write_text(json.dumps(value, ensure_ascii=False, default=str), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def append_line(path: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line with a single O_APPEND write (atomic against other appenders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"{path}: short write to the journal")
    finally:
        os.close(fd)


def read_journal(path: Path, *, accepted_only: bool = False) -> list[dict[str, Any]]:
    """Every line of a journal, oldest first ([] if there is none yet).

    With ``accepted_only``, just the submits that created a job (what a vendor bills).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [j for j in lines if j["accepted"]] if accepted_only else lines


# --------------------------------------------------------------------------- provider

_JOB_ID = re.compile(r"loc_[0-9a-f]{32}")


class LocalProvider(BaseProvider):
    """The offline provider ``local``; see the module docstring for behaviour and faults."""

    name: ClassVar[str] = "local"
    finds_jobs: ClassVar[bool] = True
    lookup: ClassVar[str] = "the journal of accepted submits, by shot key"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules = parse_faults(settings.local_faults)
        self.root = settings.local_root
        self.jobs = self.root / "jobs"
        self.out = self.root / "out"
        scratch.sweep_once(self.root)  # what a killed process was writing

    # -- the protocol

    async def submit(self, request: ShotRequest) -> JobRef:
        _validate(request)
        rule = await asyncio.to_thread(self._choose, request) if self.rules else None
        fault = rule.fault if rule else None
        if fault in ("429", "500", "moderation"):  # a vendor logs the requests it refuses too
            await asyncio.to_thread(self._journal, request, None, fault, time.time())
        if fault == "429":
            raise RetryableError("429 Too Many Requests (local fault)", reason="rate limited (429)",
                                 retry_after=rule.retry_after if rule else None)
        if fault == "500":
            raise RetryableError("500 Internal Server Error (local fault)", reason="server error (500)")
        if fault == "moderation":
            raise PermanentError("the prompt was refused (local fault)",
                                 reason="moderation: the prompt was flagged by the content policy")
        job_id = f"loc_{uuid.uuid4().hex}"
        await asyncio.to_thread(self._keep_images, request)
        job = {"job_id": job_id, "submitted_at": time.time(), "latency": self.settings.local_latency,
               "request": _request_json(request), "fault": fault,
               "variants": rule.variants if rule else {}, "cancelled_at": None}
        await asyncio.to_thread(self._create, job, request)
        if fault == "timeout":
            raise AmbiguousSubmitError("the submit timed out after it was sent (local fault)",
                                       reason="timeout waiting for the vendor's answer")
        return JobRef(self.name, job_id)

    async def poll(self, ref: JobRef) -> JobStatus:
        return await asyncio.to_thread(self._status, ref.job_id)

    async def download(self, ref: JobRef, dest: Path) -> Path:
        status = await self.poll(ref)
        if status.state == "failed":
            raise PermanentError(f"job {ref.job_id} failed: {status.error}",
                                 reason=status.error or "failed")
        if status.state != "succeeded":
            raise RetryableError(f"job {ref.job_id} is still {status.state}; nothing to download")
        await asyncio.to_thread(self._deliver, ref.job_id, dest)
        return dest

    async def cancel(self, ref: JobRef) -> bool:
        return await asyncio.to_thread(self._cancel, ref.job_id)

    async def aclose(self) -> None:  # nothing to release: no connections, no workers
        return None

    async def find(self, request: ShotRequest, since: float = 0.0) -> JobRef | None:
        """The latest job accepted for ``request.key``, as a vendor's lookup by key (the key
        names one take, so ``since`` is not needed to tell takes apart)."""
        return await asyncio.to_thread(self._find, request.key)

    # -- blocking helpers, run in threads

    def _choose(self, request: ShotRequest) -> Rule | None:
        """The first matching rule whose count is not used up (consuming one of its uses)."""
        matching = [rule for rule in self.rules if rule.matches(request)]
        if not any(rule.limit for rule in matching):
            return matching[0] if matching else None
        state = self.root / "faults.json"
        with _locked(self.root / "faults.lock"):
            counts: dict[str, int] = self._read(state) or {}
            for rule in matching:
                if rule.limit is None:
                    return rule
                if counts.get(rule.text, 0) < rule.limit:
                    counts[rule.text] = counts.get(rule.text, 0) + 1
                    _write_json(state, counts)
                    return rule
        return None

    def _create(self, job: dict[str, Any], request: ShotRequest) -> None:
        # The job file first, then the journal line. The line is the moment the "vendor"
        # accepts the job and the only thing find() reads: a process killed between the two
        # leaves an orphan file nobody accepted, never an accepted job the journal lacks.
        _write_json(self._job_path(job["job_id"]), job)
        self._journal(request, job["job_id"], job["fault"], job["submitted_at"])

    def _keep_images(self, request: ShotRequest) -> None:
        """Keep the request's images by hash, as a vendor keeps an upload."""
        for image in request.images():
            path = self.root / "images" / image.sha256.split(":", 1)[1]
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
                tmp.write_bytes(image.data)
                os.replace(tmp, path)

    def _find(self, key: str) -> JobRef | None:
        for line in reversed(read_journal(self.settings.journal_path, accepted_only=True)):
            if line["key"] == key and self._job_path(line["job_id"]).exists():
                return JobRef(self.name, line["job_id"])
        return None

    def _journal(self, request: ShotRequest, job_id: str | None, fault: str | None,
                 when: float) -> None:
        """One line per submit received; ``accepted`` is false for refused ones (no job)."""
        append_line(self.settings.journal_path, {
            "time": datetime.fromtimestamp(when, UTC).isoformat(),
            "accepted": job_id is not None, "job_id": job_id, "key": request.key,
            "model": request.model, "index": request.index, "prompt": request.prompt,
            "seconds": request.seconds, "size": request.size, "fps": request.fps,
            "audio": request.audio, "seed": request.seed, "take": request.take,
            "pid": os.getpid(), "fault": fault, "wire_model": request.wire_model,
            **_images_json(request),
        })

    def _status(self, job_id: str) -> JobStatus:
        job = self._load(job_id)
        if job["cancelled_at"] is not None:
            return JobStatus("failed", error="cancelled by the client", retryable=False)
        elapsed = time.time() - job["submitted_at"]
        latency = float(job["latency"])
        if elapsed < latency or job["fault"] == "hang":
            progress = min(0.99, max(0.0, elapsed / latency)) if latency > 0 else 0.99
            state: JobState = "queued" if elapsed < 0.1 * latency else "running"
            wait = 0.5 if job["fault"] == "hang" else min(0.5, max(0.01, latency - elapsed))
            return JobStatus(state, progress=progress, next_poll=wait)
        if job["fault"] == "fail":
            return JobStatus("failed", error="generation failed: internal error on the render "
                             "node (local fault 'fail')", retryable=True)
        if job["fault"] == "moderation/poll":
            return JobStatus("failed", error="moderation: the generated video was blocked by "
                             "the content policy (local fault)", retryable=False)
        try:
            self._render(job)
        except MediaError as exc:
            return JobStatus("failed", error=f"local renderer: {exc}", retryable=False)
        return JobStatus("succeeded", progress=1.0, billed_seconds=float(job["request"]["seconds"]))

    def _render(self, job: dict[str, Any]) -> Path:
        """Render the job's clip once; a second caller waits for the first and reuses it."""
        out = self.out / f"{job['job_id']}.mp4"
        if out.exists():
            return out
        with _locked(self.out / f"{job['job_id']}.lock"):
            if out.exists():
                return out
            tmp = scratch.beside(out, ".mp4")
            try:
                render(_look(job, self.root / "images"), tmp)
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
        return out

    def _deliver(self, job_id: str, dest: Path) -> None:
        job = self._load(job_id)
        src = self._render(job)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if job["fault"] == "truncate":
            data = src.read_bytes()
            dest.write_bytes(data[: len(data) // 2])
        elif job["fault"] == "corrupt":
            data = src.read_bytes()  # an MP4 signature, then noise: sniffed as MP4, unreadable
            head = int.from_bytes(data[:4], "big")
            dest.write_bytes(data[:head] + random.Random(job_id).randbytes(len(data) - head))
        else:
            shutil.copyfile(src, dest)

    def _cancel(self, job_id: str) -> bool:
        """Cancel a job that is not finished yet; a finished or cancelled one is left alone."""
        with _locked(self.out / f"{job_id}.lock"):
            job = self._load(job_id)
            finished = time.time() - job["submitted_at"] >= job["latency"] and job["fault"] != "hang"
            if job["cancelled_at"] is not None or finished:
                return False
            _write_json(self._job_path(job_id), {**job, "cancelled_at": time.time()})
        return True

    def _load(self, job_id: str) -> dict[str, Any]:
        job = self._read(self._job_path(job_id)) if _JOB_ID.fullmatch(job_id) else None
        if not isinstance(job, dict):
            raise PermanentError(f"local job {job_id!r} not found in {self.jobs}",
                                 reason="404: job not found")
        return job

    @staticmethod
    def _read(path: Path) -> Any:
        """A JSON file's value, or None if there is no such file."""
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def _job_path(self, job_id: str) -> Path:
        return self.jobs / f"{job_id}.json"



def _validate(request: ShotRequest) -> None:
    """Refuse what a vendor would refuse with a 400: the request can never succeed."""
    problems = []
    m = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", request.size)
    if not m or int(m[1]) % 2 or int(m[2]) % 2 or max(int(m[1]), int(m[2])) > 4096:
        problems.append(f"size {request.size!r} is not WxH with even sides up to 4096")
    if not 1 <= request.seconds <= 120:
        problems.append(f"seconds {request.seconds} is not 1..120")
    if not 1 <= request.fps <= 120:
        problems.append(f"fps {request.fps} is not 1..120")
    if problems:
        raise PermanentError("invalid request: " + "; ".join(problems),
                             reason="validation: " + "; ".join(problems))


def _images_json(request: ShotRequest) -> dict[str, Any]:
    """The request's input images by hash and role (for the job file and the journal)."""
    return {
        "cast": list(request.cast),
        "first_frame": request.first_frame.sha256 if request.first_frame else None,
        "last_frame": request.last_frame.sha256 if request.last_frame else None,
        "references": [{"name": r.name, "sha256": r.sha256} for r in request.references],
    }


def _request_json(request: ShotRequest) -> dict[str, Any]:
    """The request as the job file keeps it: its fields, its images by hash only."""
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)
              if f.name not in ("first_frame", "last_frame", "references", "cast")}
    return {**fields, **_images_json(request)}


def _look(job: dict[str, Any], images: Path) -> Look:
    req = job["request"]
    width, height = (int(n) for n in req["size"].split("x"))

    def data(sha256: str | None) -> bytes | None:
        return (images / sha256.split(":", 1)[1]).read_bytes() if sha256 else None

    shot = req["index"] if req.get("shot") is None else req["shot"]
    look = Look(prompt=req["prompt"], number=shot + 1, model=req["model"], seed=req["seed"],
                take=req["take"], seconds=req["seconds"], width=width, height=height,
                fps=req["fps"], audio=req["audio"], cast=tuple(req.get("cast", ())),
                first_frame=data(req.get("first_frame")), last_frame=data(req.get("last_frame")),
                references=tuple((r["name"], data(r["sha256"]) or b"")
                                 for r in req.get("references", ())))
    return dataclasses.replace(look, **job["variants"])
