"""The offline ``local`` provider: real clips, vendor-like jobs, the journal and scripted faults."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from shotline.core.keys import shot_key
from shotline.errors import (
    AmbiguousSubmitError,
    ConfigError,
    MediaError,
    PermanentError,
    RetryableError,
)
from shotline.providers.base import JobRef, JobStatus, Provider, ShotRequest
from shotline.providers.local import LocalProvider, parse_faults, read_journal
from shotline.providers.local_render import Look, background, render, wrap
from shotline.providers.plugins import load_provider
from shotline.settings import Settings

SIZE = "192x108"


def req(prompt: str = "A red kite rises over the dunes.", *, index: int = 0, seconds: int = 1,
        size: str = SIZE, fps: int = 24, audio: bool = False, seed: int | None = None,
        take: int = 1) -> ShotRequest:
    key = shot_key(provider="local", model="local/preview", prompt=prompt, seconds=seconds,
                   size=size, fps=fps, audio=audio, seed=seed, take=take)
    return ShotRequest(model="local/preview", wire_model="preview", prompt=prompt, seconds=seconds,
                       size=size, fps=fps, audio=audio, seed=seed, take=take, key=key, index=index)


def local(home: Path, **kw: Any) -> LocalProvider:
    return LocalProvider(Settings(home=home, **kw))


async def settle(provider: Provider, ref: JobRef, limit: float = 20) -> JobStatus:
    deadline = time.monotonic() + limit
    while True:
        status = await provider.poll(ref)
        if status.state in ("succeeded", "failed") or time.monotonic() > deadline:
            return status
        assert status.next_poll is not None and 0 < status.next_poll <= 0.5
        await asyncio.sleep(status.next_poll)


async def clip_of(provider: Provider, request: ShotRequest, dest: Path) -> Path:
    ref = await provider.submit(request)
    status = await settle(provider, ref)
    assert status.state == "succeeded", status
    return await provider.download(ref, dest)


@dataclass
class Clip:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: Fraction
    frames: int
    duration: float
    audio: tuple[int, int, float] | None  # rate, channels, seconds


def probe(path: Path) -> Clip:
    with av.open(str(path)) as container:
        v = container.streams.video[0]
        audio = None
        if container.streams.audio:
            a = container.streams.audio[0]
            assert a.codec_context.name == "aac"
            assert a.duration is not None and a.time_base is not None
            audio = (a.rate, a.channels, float(a.duration * a.time_base))
        assert v.average_rate is not None and v.duration is not None and v.time_base is not None
        clip = Clip(v.codec_context.name, v.format.name, v.width, v.height, Fraction(v.average_rate),
                    0, float(v.duration * v.time_base), audio)
        clip.frames = sum(1 for _ in container.decode(v))
    return clip


def top_level_boxes(path: Path) -> list[str]:
    data, pos, kinds = path.read_bytes(), 0, []
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8].decode()
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        kinds.append(kind)
        pos += size or len(data)
    return kinds


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def first_frame_pixel(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        pixel = frame.to_image().getpixel((1, 1))  # type: ignore[no-untyped-call]
    assert isinstance(pixel, tuple)
    return pixel[0], pixel[1], pixel[2]


# --------------------------------------------------------------------------- rendering


@pytest.mark.slow
@pytest.mark.asyncio
async def test_plugin_round_trip_gives_the_requested_clip(tmp_path: Path) -> None:
    provider = load_provider("local", Settings(home=tmp_path))
    assert isinstance(provider, LocalProvider) and provider.name == "local"
    out = await clip_of(provider, req(seconds=2, fps=25), tmp_path / "dl" / "a.mp4")
    clip = probe(out)
    assert (clip.codec, clip.pix_fmt, clip.width, clip.height) == ("h264", "yuv420p", 192, 108)
    assert clip.fps == 25 and clip.frames == 50 and clip.duration == pytest.approx(2.0)
    assert clip.audio is None
    kinds = top_level_boxes(out)
    assert kinds.index("moov") < kinds.index("mdat")  # +faststart
    await provider.aclose()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_audio_on_gives_an_aac_tone_bed(tmp_path: Path) -> None:
    out = await clip_of(local(tmp_path), req(seconds=2, audio=True), tmp_path / "a.mp4")
    clip = probe(out)
    assert clip.frames == 48 and clip.audio is not None
    rate, channels, seconds = clip.audio
    assert (rate, channels) == (48000, 2) and abs(seconds - 2.0) <= 1024 / 48000


@pytest.mark.slow
@pytest.mark.asyncio
async def test_same_request_same_bytes_and_take_or_prompt_changes_them(tmp_path: Path) -> None:
    one = await clip_of(local(tmp_path / "h1"), req(audio=True), tmp_path / "1.mp4")
    two = await clip_of(local(tmp_path / "h2"), req(audio=True), tmp_path / "2.mp4")
    take2 = await clip_of(local(tmp_path / "h1"), req(audio=True, take=2), tmp_path / "3.mp4")
    other = await clip_of(local(tmp_path / "h1"), req("A blue kite dips.", audio=True),
                          tmp_path / "4.mp4")
    assert sha(one) == sha(two)
    assert len({sha(one), sha(take2), sha(other)}) == 3
    # The background is the hash colour, and differs between prompts: cuts are visible.
    for path, request in ((one, req()), (take2, req(take=2)), (other, req("A blue kite dips."))):
        want = background(request.prompt, request.seed, request.take)
        got = first_frame_pixel(path)
        assert all(abs(g - w) <= 8 for g, w in zip(got, want, strict=True)), (got, want)
    assert background("A red kite rises over the dunes.", None, 1) != background("A blue kite dips.",
                                                                                None, 1)


@pytest.mark.slow
def test_every_frame_differs_from_the_one_before(tmp_path: Path) -> None:
    look = Look(prompt="Still life with a very still teapot", number=3, model="local/preview",
                seed=7, take=1, seconds=2, width=256, height=144, fps=30, audio=False)
    render(look, tmp_path / "c.mp4")
    with av.open(str(tmp_path / "c.mp4")) as container:
        lumas = [bytes(frame.planes[0]) for frame in container.decode(video=0)]
    assert len(lumas) == 60
    assert all(a != b for a, b in zip(lumas, lumas[1:], strict=False))


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.mark.slow
def test_renders_far_faster_than_real_time(tmp_path: Path) -> None:
    look = Look(prompt="A lighthouse at dusk", number=1, model="local/preview", seed=None,
                take=1, seconds=4, width=640, height=360, fps=24, audio=True)
    cpu, start = cpu_seconds(), time.perf_counter()
    render(look, tmp_path / "speed.mp4")
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    # CPU time (ffmpeg's included) barely depends on what else the machine runs; wall time
    # does, so it only has to beat real time. Unloaded, 2 cores: about 0.4 s CPU, 0.3 s wall.
    assert cpu < look.seconds / 3, f"{look.seconds} s of 640x360 took {cpu:.2f} s of CPU"
    assert wall < look.seconds, f"{look.seconds} s of 640x360 took {wall:.2f} s"


def test_an_ffmpeg_failure_is_a_media_error_with_its_log(tmp_path: Path) -> None:
    look = Look(prompt="x", number=1, model="local/preview", seed=None, take=1, seconds=2,
                width=160, height=90, fps=24, audio=True, audio_rate=1)
    with pytest.raises(MediaError, match="sample rate"):
        render(look, tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


def test_long_prompts_are_wrapped_and_cut() -> None:
    from PIL import ImageFont

    font = ImageFont.load_default(size=12)
    lines = wrap("word " * 500 + "Supercalifragilistic" * 20, font, 150, 3)
    assert len(lines) == 3 and lines[-1].endswith("...")
    assert all(font.getlength(line) <= 150 for line in lines)
    assert wrap("short prompt", font, 150, 3) == ["short prompt"]


# --------------------------------------------------------------------------- jobs


@pytest.mark.slow
@pytest.mark.asyncio
async def test_latency_is_respected(tmp_path: Path) -> None:
    latency = 1.0
    provider = local(tmp_path, local_latency=latency)
    before = time.time()
    ref = await provider.submit(req())
    assert ref.provider == "local" and ref.job_id.startswith("loc_")
    first = await provider.poll(ref)
    assert first.state in ("queued", "running") and first.progress is not None
    assert 0 <= first.progress < 1 and first.next_poll is not None and 0 < first.next_poll <= 0.5
    with pytest.raises(RetryableError):
        await provider.download(ref, tmp_path / "early.mp4")
    seen: list[tuple[float, JobStatus]] = []
    while not seen or seen[-1][1].state != "succeeded":
        await asyncio.sleep(0.1)
        seen.append((time.time(), await provider.poll(ref)))
        assert time.time() - before < 20
    waiting = [(t, s) for t, s in seen if s.state != "succeeded"]
    done_at = seen[-1][0]
    assert done_at - before >= latency  # never done early...
    assert all(s.state in ("queued", "running") for _, s in waiting)
    assert waiting and waiting[-1][0] - before > latency / 2  # ...and polled while waiting
    progress = [first.progress] + [s.progress or 0 for _, s in waiting]
    assert progress == sorted(progress) and progress[-1] > 0.4
    assert seen[-1][1].billed_seconds == 1 and seen[-1][1].progress == 1
    assert probe(await provider.download(ref, tmp_path / "x.mp4")).frames == 24


@pytest.mark.slow
@pytest.mark.asyncio
async def test_jobs_outlive_the_provider_instance(tmp_path: Path) -> None:
    first = local(tmp_path, local_latency=1.0)
    ref = JobRef.from_json(json.loads(json.dumps((await first.submit(req())).to_json())))
    await first.aclose()
    second = local(tmp_path, local_latency=30)  # the latency was fixed when the job was submitted
    assert (await second.poll(ref)).state in ("queued", "running")
    assert (await settle(second, ref)).state == "succeeded"
    out = await second.download(ref, tmp_path / "x.mp4")
    assert sha(out) == sha(await clip_of(local(tmp_path / "other"), req(), tmp_path / "y.mp4"))


SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from shotline.providers.base import JobRef, ShotRequest
from shotline.providers.local import LocalProvider
from shotline.settings import Settings

home, mode, arg = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

async def main():
    provider = LocalProvider(Settings(home=home, local_latency=float(sys.argv[4])))
    if mode == "submit":  # arg: how many; prompts are long, so lines exceed PIPE_BUF
        out = []
        for i in range(int(arg)):
            request = ShotRequest(model="local/preview", wire_model="preview",
                                  prompt=f"pid {sys.argv[5]} shot {i} " + "lorem " * 1200,
                                  seconds=1, size="192x108", fps=24, audio=False, seed=None,
                                  take=1, key=f"sha256:{sys.argv[5]}-{i}", index=i)
            out.append((await provider.submit(request)).to_json())
        print(json.dumps(out))
    else:  # finish: poll the job until it is done, then download it
        ref = JobRef.from_json(json.loads(arg))
        while (status := await provider.poll(ref)).state not in ("succeeded", "failed"):
            await asyncio.sleep(status.next_poll or 0.1)
        await provider.download(ref, Path(sys.argv[5]))
        print(json.dumps({"state": status.state}))

asyncio.run(main())
"""


def run_script(*args: object, background: bool = False) -> Any:
    argv = [sys.executable, "-c", SCRIPT, *map(str, args)]
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_jobs_outlive_the_process(tmp_path: Path) -> None:
    # Submitted by a process that has since exited; polled and downloaded here.
    [raw] = run_script(tmp_path, "submit", 1, 0.2, "child")
    ref = JobRef.from_json(raw)
    assert (await settle(local(tmp_path), ref)).state == "succeeded"
    here = await local(tmp_path).download(ref, tmp_path / "here.mp4")
    assert probe(here).frames == 24
    # Submitted here; finished and downloaded by another process.
    mine = await local(tmp_path, local_latency=0.2).submit(req("Another shot"))
    assert run_script(tmp_path, "finish", json.dumps(mine.to_json()), 0, tmp_path / "there.mp4") == {
        "state": "succeeded"}
    assert probe(tmp_path / "there.mp4").frames == 24


@pytest.mark.slow
@pytest.mark.asyncio
async def test_concurrent_polls_render_once_and_leave_no_temp_files(tmp_path: Path) -> None:
    ref = await local(tmp_path).submit(req(audio=True))
    statuses = await asyncio.gather(*(local(tmp_path).poll(ref) for _ in range(4)))
    assert {s.state for s in statuses} == {"succeeded"}
    out = tmp_path / "local" / "out"
    assert sorted(p.suffix for p in out.iterdir()) == [".lock", ".mp4"]
    assert sha(await local(tmp_path).download(ref, tmp_path / "x.mp4")) == sha(out / f"{ref.job_id}.mp4")


@pytest.mark.asyncio
async def test_cancel_and_unknown_jobs(tmp_path: Path) -> None:
    provider = local(tmp_path, local_latency=30)
    ref = await provider.submit(req())
    assert await provider.cancel(ref) is True
    status = await provider.poll(ref)
    assert status.state == "failed" and not status.retryable and "cancel" in (status.error or "")
    assert await provider.cancel(ref) is False
    failed = await local(tmp_path, local_faults="*:fail").submit(req())
    assert await provider.cancel(failed) is False  # already finished (failed) at latency 0
    with pytest.raises(PermanentError, match="not found"):
        await provider.poll(JobRef("local", "loc_" + "0" * 32))
    with pytest.raises(PermanentError):
        await provider.poll(JobRef("local", "../../etc/passwd"))


@pytest.mark.asyncio
async def test_invalid_request_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="size"):
        await local(tmp_path).submit(req(size="641x360"))
    assert read_journal(tmp_path / "local" / "journal.jsonl") == []


# --------------------------------------------------------------------------- journal


@pytest.mark.asyncio
async def test_journal_has_one_line_per_submit_with_its_fields(tmp_path: Path) -> None:
    journal = tmp_path / "j" / "submits.jsonl"
    provider = local(tmp_path, local_latency=60, local_journal=journal)
    requests = [req("Shot one", index=0), req("Shot two", index=1, seed=5, audio=True, take=2)]
    refs = [await provider.submit(r) for r in requests]
    lines = read_journal(journal)
    assert len(lines) == 2 and not (tmp_path / "local" / "journal.jsonl").exists()
    for line, ref, r in zip(lines, refs, requests, strict=True):
        assert line["job_id"] == ref.job_id and line["key"] == r.key and line["pid"] == os.getpid()
        for field in ("model", "index", "prompt", "seconds", "size", "fps", "audio", "seed", "take"):
            assert line[field] == getattr(r, field), field
        assert line["time"].endswith("+00:00")
    assert read_journal(tmp_path / "missing.jsonl") == []


def test_journal_lines_from_two_processes_never_interleave(tmp_path: Path) -> None:
    procs = [run_script(tmp_path, "submit", 20, 600, tag, background=True) for tag in ("a", "b")]
    refs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=50)
        assert proc.returncode == 0, stderr
        refs += json.loads(stdout)
    lines = read_journal(tmp_path / "local" / "journal.jsonl")  # json.loads fails on a torn line
    assert len(lines) == 40 and len({line["pid"] for line in lines}) == 2
    assert sorted(line["job_id"] for line in lines) == sorted(r["job_id"] for r in refs)
    for tag in ("a", "b"):
        mine = [line for line in lines if line["key"].startswith(f"sha256:{tag}-")]
        assert [line["index"] for line in mine] == list(range(20))  # in order, per process
    assert not any((tmp_path / "local" / "out").glob("*.mp4"))  # latency: nothing rendered


# --------------------------------------------------------------------------- faults


def test_fault_spec_parses() -> None:
    rules = parse_faults(" shot2:429/2:x1, prompt~Storm:fail ,*:codec=hevc+fps=30+mono+size=320x240,")
    assert [(r.shot, r.word, r.fault, r.retry_after, r.limit) for r in rules] == [
        (2, None, "429", 2.0, 1), (None, "Storm", "fail", None, None),
        (None, None, None, None, None)]
    assert rules[2].variants == {"codec": "hevc", "fps": 30, "channels": 1, "width": 320,
                                 "height": 240}
    assert parse_faults("") == ()


@pytest.mark.parametrize("spec", [
    "shot0:429", "shot2", "shot2:boom", "*:429/x", "*:fps=0", "*:size=641x360", "*:429+500",
    "*:429:x0", "*:429:2", "*:pix=yuv422p", "*:arate=45000", "*:fps=500", "*:429/-1",
    "prompt~:fail", "a:b:c:d", "*:", "*:fps=30+",
])
def test_malformed_fault_spec_is_a_config_error(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ConfigError, match="Allowed: rules are WHEN:WHAT"):
        local(tmp_path, local_faults=spec)


def test_fault_spec_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOTLINE_LOCAL_FAULTS", "shot1:explode")
    with pytest.raises(ConfigError, match="explode"):
        load_provider("local", Settings(home=tmp_path))


@pytest.mark.asyncio
async def test_submit_faults_raise_and_create_no_job(tmp_path: Path) -> None:
    journal = tmp_path / "local" / "journal.jsonl"
    with pytest.raises(RetryableError) as limited:
        await local(tmp_path, local_faults="*:429/2").submit(req())
    assert limited.value.retry_after == 2
    with pytest.raises(RetryableError) as plain:
        await local(tmp_path, local_faults="*:429").submit(req())
    assert plain.value.retry_after is None and "429" in plain.value.reason
    with pytest.raises(RetryableError, match="500"):
        await local(tmp_path, local_faults="*:500").submit(req())
    with pytest.raises(PermanentError) as refused:
        await local(tmp_path, local_faults="*:moderation").submit(req())
    assert "moderation" in refused.value.reason
    lines = read_journal(journal)
    assert [(j["fault"], j["accepted"], j["job_id"]) for j in lines] == [
        ("429", False, None), ("429", False, None), ("500", False, None),
        ("moderation", False, None)]
    assert read_journal(journal, accepted_only=True) == []
    assert not (tmp_path / "local" / "jobs").exists()


@pytest.mark.asyncio
async def test_timeout_creates_the_job_and_find_returns_it(tmp_path: Path) -> None:
    provider = local(tmp_path, local_latency=60, local_faults="*:timeout")
    request = req()
    assert await provider.find(request) is None
    with pytest.raises(AmbiguousSubmitError):
        await provider.submit(request)
    [line] = read_journal(tmp_path / "local" / "journal.jsonl")
    found = await local(tmp_path).find(request)
    assert found is not None and found.job_id == line["job_id"] and line["fault"] == "timeout"
    assert (await provider.poll(found)).state in ("queued", "running")


@pytest.mark.asyncio
async def test_poll_faults(tmp_path: Path) -> None:
    provider = local(tmp_path, local_faults="prompt~FAIL:fail,prompt~nsfw:moderation/poll,"
                                            "prompt~hang:hang")
    failed = await provider.poll(await provider.submit(req("this will fail")))
    assert failed.state == "failed" and failed.retryable and failed.error
    refused = await provider.poll(await provider.submit(req("nsfw beach")))
    assert refused.state == "failed" and not refused.retryable and "moderation" in (refused.error or "")
    stuck = await provider.submit(req("hang forever"))
    for _ in range(3):
        status = await provider.poll(stuck)
        assert status.state == "running" and status.next_poll == 0.5
    assert await provider.cancel(stuck) is True
    assert (await provider.poll(stuck)).state == "failed"
    assert not any((tmp_path / "local" / "out").glob("*.mp4"))


@pytest.mark.asyncio
async def test_fault_counts_are_shared_across_instances_and_first_match_wins(tmp_path: Path) -> None:
    spec = "shot1:429:x2,shot1:fail:x1,shot2:500"
    with pytest.raises(RetryableError):
        await local(tmp_path, local_faults=spec).submit(req())
    with pytest.raises(RetryableError):  # a new instance (or process) sees the same count
        await local(tmp_path, local_faults=spec).submit(req())
    ref = await local(tmp_path, local_faults=spec).submit(req())  # 429 used up: the next rule
    assert (await local(tmp_path).poll(ref)).state == "failed"
    ok = await local(tmp_path, local_faults=spec, local_latency=60).submit(req())
    assert (await local(tmp_path).poll(ok)).state in ("queued", "running")
    with pytest.raises(RetryableError, match="500"):  # shot2 is request.index 1
        await local(tmp_path, local_faults=spec).submit(req(index=1))
    journal = tmp_path / "local" / "journal.jsonl"
    assert [line["fault"] for line in read_journal(journal)] == ["429", "429", "fail", None, "500"]
    assert [line["fault"] for line in read_journal(journal, accepted_only=True)] == ["fail", None]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_download_faults_damage_the_file(tmp_path: Path) -> None:
    good = await clip_of(local(tmp_path / "good"), req(), tmp_path / "good.mp4")
    cut = await clip_of(local(tmp_path, local_faults="*:truncate"), req(), tmp_path / "cut.mp4")
    bad = await clip_of(local(tmp_path, local_faults="*:corrupt"), req(), tmp_path / "bad.mp4")
    data = good.read_bytes()
    assert cut.read_bytes() == data[: len(data) // 2]
    assert bad.stat().st_size == len(data) and bad.read_bytes()[4:8] == b"ftyp"
    assert bad.read_bytes()[64:] != data[64:]
    with pytest.raises(av.FFmpegError):
        probe(bad)


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize(("spec", "audio", "want"), [
    ("*:codec=hevc+fps=30+arate=44100+mono", True,
     dict(codec="hevc", fps=30, frames=30, audio=(44100, 1))),
    ("*:pix=yuv444p+size=160x120", False, dict(pix_fmt="yuv444p", width=160, height=120, audio=None)),
    ("*:noaudio", True, dict(audio=None, frames=24)),
    ("*:audio", False, dict(audio=(48000, 2))),
    ("*:shortaudio", True, dict(audio=(48000, 2), audio_seconds=0.5)),
])
async def test_format_variants(tmp_path: Path, spec: str, audio: bool, want: dict[str, Any]) -> None:
    out = await clip_of(local(tmp_path, local_faults=spec), req(audio=audio), tmp_path / "v.mp4")
    clip = probe(out)
    for field in ("codec", "pix_fmt", "width", "height", "fps", "frames"):
        if field in want:
            assert getattr(clip, field) == want[field], field
    if want["audio"] is None:
        assert clip.audio is None
    else:
        assert clip.audio is not None and clip.audio[:2] == want["audio"]
        seconds = want.get("audio_seconds", 1.0)
        assert abs(clip.audio[2] - seconds) <= 1024 / clip.audio[0] + 1e-3
    assert abs(clip.duration - 1.0) < 1e-3
