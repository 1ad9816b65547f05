from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import example


def run(*args: str, stdin: str | None = None,
        env_columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ.copy()
    if env_columns:
        env["COLUMNS"] = str(env_columns)
    return subprocess.run(
        [sys.executable, "-m", "shotline", *args], input=stdin, capture_output=True,
        text=True, env=env, timeout=60,
    )


def as_json(*args: str) -> Any:
    proc = run(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_plan_json_shape() -> None:
    brief = example("bakery-shotlist.md")
    data = as_json("plan", str(brief), "--seconds", "20", "--model", "local/sim")
    assert data["model"] == "local/sim" and data["seconds"] == 20
    assert data["billed_seconds"] == sum(s["seconds"] for s in data["shots"])
    text = brief.read_text()
    for i, shot in enumerate(data["shots"]):
        assert shot["index"] == i + 1  # numbered from 1, as on screen and in the API
        start, end = shot["source"]
        assert text[start:end].startswith(f"Shot {i + 1}:")
        assert shot["prompt"].startswith(text[start:end].split(": ", 1)[1][:20])


def test_estimate_json_adds_costs() -> None:
    data = as_json("estimate", str(example("tea-timecoded.txt")), "--model", "local/sim",
                   "--audio")
    assert data["cost_usd"] == "4.4" and data["full_usd"] == "4.4"  # nothing stored yet
    assert [s["cost_usd"] for s in data["shots"]] == ["1.2", "1.2", "0.8", "1.2"]
    assert [s["stored"] for s in data["shots"]] == [False] * 4


def test_brief_from_stdin_and_text() -> None:
    proc = run("plan", "-", "--json", stdin="Shot 1: A gull.\nShot 2: A boat.\n")
    assert [s["prompt"] for s in json.loads(proc.stdout)["shots"]] == ["A gull.", "A boat."]
    data = as_json("plan", "--text", "A single quiet shot of rain.")
    assert len(data["shots"]) == 1 and data["seconds"] == 5


def test_providers_json_lists_durations_and_status() -> None:
    models = {m["model"]: m for m in as_json("providers")}
    assert models["local/preview"]["durations"] == list(range(1, 16))
    assert models["local/preview"]["max_seconds"] == 15
    assert models["local/preview"]["audio"] == "optional"
    assert {m["status"] for m in models.values()} == {"active", "sunset"}
    vendors = [m for m in models.values() if m["status"] == "active"
               and not m["model"].startswith("local/")]
    assert len(vendors) >= 40
    assert all(m["price_ref"] and m["price_date"] and m["price_source"] for m in vendors)
    # Whether a lost submit can be looked up, and what to check where it cannot.
    assert models["replicate/luma-ray-3.2"]["lookup"]["finds_jobs"] is True
    runway = models["runway/gen4.5"]["lookup"]
    assert runway["finds_jobs"] is False and "check" in runway["how"]


def test_human_output_is_a_table() -> None:
    proc = run("estimate", str(example("bakery-shotlist.md")), "--model", "local/sim")
    assert proc.returncode == 0 and "local/sim" in proc.stdout and "$" in proc.stdout


def test_bad_input_exits_2_with_a_message() -> None:
    proc = run("plan", "--text", "A cat.", "--model", "nope/none")
    assert proc.returncode == 2 and "unknown model 'nope/none'" in proc.stderr
    assert proc.stdout == ""
    proc = run("plan", "missing.md")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run("plan", "--text", "A cat.", "--transition", "wipe")
    assert proc.returncode == 2 and "crossfade:SECONDS" in proc.stderr


def test_sunset_model_refuses_with_date() -> None:
    proc = run("plan", "--text", "A cat.", "--model", "openai/sora-2")
    assert proc.returncode == 2 and "2026-09-24" in proc.stderr


def test_overrides_file_and_expiry_warning(tmp_path: Path) -> None:
    path = tmp_path / "o.toml"
    path.write_text('[models."local/sim"]\nreason = "promo"\nexpires = 2020-01-01\n'
                    'prices = { "*" = 1.0 }\n')
    proc = run("estimate", "--text", "A cat.", "--model", "local/sim", "--seconds", "4",
               "--overrides", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cost_usd"] == "4"
    assert "expired on 2020-01-01" in proc.stderr
    listed = {m["model"]: m for m in json.loads(run("providers", "--json", "--overrides",
                                                    str(path)).stdout)}
    assert listed["local/sim"]["overridden"] is True
    assert listed["local/preview"]["overridden"] is False


def test_providers_show_which_adapters_have_credentials() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FAL_KEY", "RUNWAYML_API_SECRET", "OPENAI_API_KEY")}
    env["FAL_KEY"] = "fal-present-123456"
    proc = subprocess.run([sys.executable, "-m", "shotline", "providers", "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    models = {m["model"]: m for m in json.loads(proc.stdout)}
    assert models["local/preview"]["credentials"] == "not needed"
    assert models["fal/kling-video-v2.6-pro"]["credentials"] == "present"
    assert models["runway/gen4.5"]["credentials"] == "missing: set RUNWAYML_API_SECRET"
    assert models["openai/sora-2"]["credentials"] == "missing: set OPENAI_API_KEY"
    assert "fal-present-123456" not in proc.stdout


def test_version_completion_and_defaults_in_help() -> None:
    import shotline

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"shotline {shotline.__version__}"
    top = run("--help", env_columns=120)
    assert "--install-completion" in top.stdout and "--show-completion" in top.stdout
    render_help = " ".join(run("render", "--help", env_columns=200).stdout.split())
    for default in ("[default: (./BRIEF-NAME.mp4 in the current directory)]",
                    "[default: none]",  # --transition
                    "[default: (the brief's durations, else the time its words take to read)]",
                    "[default: (the brief's, else $SHOTLINE_MODEL, else local/preview)]",
                    "[default: (no cap)]", "[default: 1]"):
        assert default in render_help, default


def test_plan_shows_the_hint_it_read_and_refuses_a_doubling_one() -> None:
    data = as_json("plan", "--text", "Shot 1: A gull dives. (4 s)\nShot 2: MAYA (30s) waits.")
    assert [s["hint"] for s in data["shots"]] == ["(4 s)", None]
    assert data["shots"][1]["prompt"] == "MAYA (30s) waits."
    table = run("plan", "--text", "Shot 1: A gull dives. (4 s)\nShot 2: A boat.", env_columns=100)
    assert "(4 s)" in table.stdout and "hint" in table.stdout
    refused = run("plan", "--text", "A gull dives. (12 s)")  # 12 s where the words take 5
    assert refused.returncode == 2 and '"(12 s)"' in refused.stderr and "--yes" in refused.stderr
    assert refused.stdout == ""
    assert as_json("plan", "--text", "A gull dives. (12 s)", "--yes")["seconds"] == 12


def test_providers_fit_80_columns_with_cap_sizes_fps_and_audio() -> None:
    proc = run("providers", env_columns=80)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    models = {m["model"]: m for m in as_json("providers")}
    for name in models:  # every id whole, on a line of its own
        assert any(line.split()[0] == name for line in lines if line.startswith("  ") and line.strip())
    text = proc.stdout
    assert "fal/kling-video-v2.6-pro  [active]\n      5, 10 s · cap 10 s · 1080p (3 sizes) · 24 fps" \
        in text
    assert "audio optional ×2 · $/s * 0.07" in text
    assert "1–15 s · cap 15 s" in text and "24/25/30 fps" in text
    assert "openai/sora-2  [sunset 2026-09-24" in text


def test_money_is_a_decimal_string_in_json() -> None:
    est = as_json("estimate", "--text", "A cat.", "--model", "local/sim")
    assert isinstance(est["cost_usd"], str) and isinstance(est["full_usd"], str)
    assert all(isinstance(s["cost_usd"], str) for s in est["shots"])
    models = {m["model"]: m for m in as_json("providers")}
    assert models["local/sim"]["prices"] == {"*": "0.1"}
    assert models["local/sim"]["audio_multiplier"] == "2"
