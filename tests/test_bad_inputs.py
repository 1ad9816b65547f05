"""A corpus of bad inputs, on the command line and over HTTP: each one gets a clear error
and changes nothing.

Every case runs against a home that already holds real work (a finished render, its clips
and ledger rows, a tenant with a key, the local vendor's journal), and is checked three
ways after it is refused:

* the database: every row of every table is as it was (an API key's ``last_used_at``
  aside, which authenticating a request may touch);
* the files under ``SHOTLINE_HOME`` (the database's own files aside): none added,
  removed or rewritten;
* the local vendor's journal: no submit was sent.

The CLI cases run in-process (``cli.run`` under Click's runner: fast); a few run as real
processes too. The API cases go to a real server on a loopback socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from rich.console import Console
from typer.testing import CliRunner

import shotline
from shotline import cli
from shotline.api import open_store
from shotline.providers.local import read_journal
from shotline.service import tenants
from shotline.settings import Settings
from shotline.store.db import Database, meta

from .service import BRIEF, running, service_settings, wait_status

SURROGATE = "\udce9"  # what Python makes of a non-UTF-8 byte in argv
DEEP_JSON = '{"shots": ' + "[" * 50_000 + "]" * 50_000 + "}"
DEEP_YAML = "shots:\n" + "- " * 3000 + "x\n"
DEEP_FLOW = "shots: " + "[" * 50_000 + "]" * 50_000 + "\n"
PARAGRAPH = "A kite climbs over the hill and the wind pulls at its string " * 95_000  # 5.8 MB

pytestmark = pytest.mark.slow  # the homes the cases run against hold real renders


def snapshot(home: Path, db: Database) -> dict[str, Any]:
    """Everything a refused input must leave as it was."""
    files = {}
    for path in sorted(home.rglob("*")):
        if path.is_file() and not path.name.startswith("shotline.db"):
            info = path.stat()
            files[str(path.relative_to(home))] = (info.st_size, info.st_mtime_ns)
    rows = {}
    with db.read() as conn:
        for table in meta.sorted_tables:
            columns = [c for c in table.c if (table.name, c.name) != ("api_keys", "last_used_at")]
            rows[table.name] = sorted(repr(tuple(r)) for r in conn.execute(sa.select(*columns)))
    return {"files": files, "rows": rows,
            "journal": read_journal(home / "local" / "journal.jsonl")}


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    found = []
    for kind in ("files", "journal"):
        if before[kind] != after[kind]:
            found.append(f"{kind} changed")
    for table, rows in after["rows"].items():
        if rows != before["rows"].get(table):
            found.append(f"table {table}: {len(before['rows'].get(table, []))} -> {len(rows)} rows")
    return found


# --- the command line ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2


def c(*argv: str, expect: str | tuple[str, ...], stdin: bytes | str = b"", code: int = 2,
      **env: str) -> Cli:
    words = (expect,) if isinstance(expect, str) else expect
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return Cli(tuple(argv), words, data, env, code)


R = ("render", "--text", "A kite climbs.")
TEXT = "A kite climbs."
CLI_CASES: dict[str, Cli] = {
    # Numbers: finite, in range, whole where they must be.
    "max-usd nan": c(*R, "--max-usd", "nan", expect=("--max-usd 'nan'", "finite number of USD")),
    "max-usd inf": c(*R, "--max-usd", "inf", expect="--max-usd"),
    "max-usd negative": c(*R, "--max-usd", "-1", expect=("--max-usd", "from 0 to")),
    "max-usd 1e20": c(*R, "--max-usd", "1e20", expect=("--max-usd", "1,000,000,000")),
    "fps 0": c(*R, "--fps", "0", expect=("--fps 0", "from 1 to 120")),
    "fps negative": c(*R, "--fps", "-5", expect="--fps -5"),
    "fps 121": c(*R, "--fps", "121", expect="from 1 to 120"),
    "fps words": c(*R, "--fps", "fast", expect="Invalid value for '--fps'"),
    "fps markup": c(*R, "--fps", "[/red]", expect="Invalid value for '--fps'"),
    "seed negative": c(*R, "--seed", "-1", expect=("--seed -1", "0 to 4294967295")),
    "seed 2**32": c(*R, "--seed", str(2**32), expect="--seed 4294967296"),
    "seed 2**200": c(*R, "--seed", str(2**200), expect=("--seed (a 201-bit number)",)),
    "seconds 0": c(*R, "--seconds", "0", expect="--seconds 0"),
    "seconds negative": c(*R, "--seconds", "-3", expect="--seconds -3"),
    "seconds nan": c(*R, "--seconds", "nan", expect="--seconds nan"),
    "seconds inf": c(*R, "--seconds", "inf", expect="--seconds inf"),
    "seconds past the cap": c(*R, "--seconds", "100000", expect="SHOTLINE_MAX_TARGET_SECONDS"),
    "take 0": c(*R, "--take", "0", expect=("--take 0", "from 1 to 1000")),
    "take 1001": c(*R, "--take", "1001", expect="--take 1001"),
    "plan fps 0": c("plan", "--text", TEXT, "--fps", "0", expect="--fps 0"),
    "estimate seconds nan": c("estimate", "--text", TEXT, "--seconds", "nan",
                              expect="--seconds nan"),
    "preview seed 2**40": c("preview", "--text", TEXT, "--model", "local/sim", "--seed",
                            str(2**40), expect="--seed"),
    # Models: named, never empty, never markup.
    "model empty": c(*R, "--model", "", expect=("--model ''", "PROVIDER/MODEL")),
    "model markup close": c(*R, "--model", "[/red]", expect="--model '[/red]'"),
    "model markup bold": c(*R, "--model", "[bold]x", expect="--model '[bold]x'"),
    "model no slash": c(*R, "--model", "local", expect="PROVIDER/MODEL"),
    "model unknown": c(*R, "--model", "nope/nothing", expect=("unknown model 'nope/nothing'",
                                                                "shotline providers")),
    "model newline": c(*R, "--model", "local/preview\n", expect="PROVIDER/MODEL"),
    "model surrogate": c(*R, "--model", "local/" + SURROGATE, expect="--model"),
    "model too long": c(*R, "--model", "local/" + "x" * 200, expect="PROVIDER/MODEL"),
    "model sunset": c(*R, "--model", "openai/sora-2", expect="shut down"),
    "model without key": c(*R, "--model", "fal/kling-video-v2.6-pro", expect="FAL_KEY"),
    # Sizes, transitions, fits.
    "size zero": c(*R, "--size", "0x0", expect=("--size '0x0'", "WxH")),
    "size odd": c(*R, "--size", "641x360", expect="even"),
    "size words": c(*R, "--size", "big", expect="--size 'big'"),
    "size huge": c(*R, "--size", "99999x99999", expect="--size"),
    "size empty": c(*R, "--size", "", expect="--size ''"),
    "size not offered": c(*R, "--model", "local/sim", "--size", "1920x1080",
                          expect="allowed sizes"),
    "transition wipe": c(*R, "--transition", "wipe", expect="--transition 'wipe'"),
    "transition long": c(*R, "--transition", "crossfade:5", expect="crossfade:SECONDS"),
    "transition nan": c(*R, "--transition", "crossfade:nan", expect="--transition"),
    "fit sideways": c(*R, "--fit", "sideways", expect=("--fit 'sideways'", "letterbox or crop")),
    "audio on a silent model": c(*R, "--model", "runway/gen4_turbo", "--audio",
                                 expect=("makes no audio",), RUNWAYML_API_SECRET="key_test_1234"),
    # Overrides files: must exist, be TOML, and price nothing below zero.
    "overrides missing": c(*R, "--overrides", "/nonexistent.toml",
                           expect=("SHOTLINE_OVERRIDES", "/nonexistent.toml does not exist")),
    "overrides binary": c(*R, "--overrides", "{files}/binary.toml", expect="not UTF-8 text"),
    "overrides a directory": c(*R, "--overrides", "{files}", expect="is a directory"),
    "overrides negative price": c(*R, "--model", "local/sim", "--overrides", "{files}/neg.toml",
                                  expect=("-10", "from 0 to 1000")),
    "overrides nan price": c(*R, "--model", "local/sim", "--overrides", "{files}/nan.toml",
                             expect="finite number"),
    "overrides text price": c(*R, "--model", "local/sim", "--overrides", "{files}/text.toml",
                              expect="prices are numbers"),
    "overrides no reason": c(*R, "--overrides", "{files}/noreason.toml", expect="no reason"),
    "overrides bad toml": c(*R, "--overrides", "{files}/broken.toml", expect="cannot read"),
    "overrides on estimate": c("estimate", "--text", TEXT, "--overrides", "/nope.toml",
                               expect="does not exist"),
    "overrides on providers": c("providers", "--overrides", "{files}/neg.toml", expect="-10"),
    # Briefs: UTF-8 text of a sane size, structured ones shallow and in range.
    "stdin not utf-8": c("render", "-", stdin=b"Shot 1: Caf\xe9", expect=(
        "not UTF-8 text", "byte 0xe9 at offset 11")),
    "stdin latin-1 file": c("plan", "{files}/latin1.txt", expect="not UTF-8 text"),
    "stdin empty": c("render", "-", stdin=b"", expect="the brief is empty"),
    "stdin blank": c("render", "-", stdin=b" \n\n \t", expect="the brief is empty"),
    "stdin NUL": c("render", "-", stdin=b"Shot 1: a\x00b", expect="NUL"),
    "text NUL": c("render", "--text", "a\x00b", expect="NUL"),
    "text surrogate": c("render", "--text", "Caf" + SURROGATE, expect="lone surrogate"),
    "stdin 5.8 MB paragraph": c("render", "-", stdin=PARAGRAPH, expect=(
        "too long", "200,000 characters")),
    "stdin 200,001 characters": c("plan", "-", stdin="a" * 200_001, expect="200,000"),
    "file 250k characters": c("plan", "{files}/long.txt", expect=(
        "250,000 characters long", "at most 200,000")),
    "file missing": c("render", "{files}/nope.md", expect="does not exist"),
    "file a directory": c("render", "{files}", expect="cannot read brief file"),
    "file name surrogate": c("render", "x" + SURROGATE + ".md", expect="file name is not text"),
    "json 50k deep": c("render", "-", stdin=DEEP_JSON, expect="nests more than 32 levels"),
    "yaml 3000 deep": c("render", "-", stdin=DEEP_YAML, expect="nests more than 32 levels"),
    "yaml flow 50k deep": c("plan", "-", stdin=DEEP_FLOW, expect="nests more than 32 levels"),
    "structured no shots": c("plan", "-", stdin='{"title": "x"}', expect="shots"),
    "structured empty shots": c("plan", "-", stdin='{"shots": []}', expect="shots"),
    "structured unknown key": c("plan", "-", stdin='{"shots": [{"prompt": "a"}], "colour": 1}',
                                expect="Allowed keys"),
    "structured seed 2**200": c("render", "-", stdin="seed: " + str(2**200) +
                                "\nshots:\n  - prompt: a kite\n", expect="the brief's seed"),
    "structured seed negative": c("plan", "-", stdin='{"seed": -4, "shots": [{"prompt": "a"}]}',
                                  expect="the brief's seed -4"),
    "structured fps 0": c("plan", "-", stdin='{"fps": 0, "shots": [{"prompt": "a"}]}',
                          expect="fps"),
    "structured fps 500": c("plan", "-", stdin='{"fps": 500, "shots": [{"prompt": "a"}]}',
                            expect="the brief's fps 500"),
    "structured seconds nan": c("plan", "-", stdin="seconds: .nan\nshots:\n  - prompt: a\n",
                                expect="seconds"),
    "structured shot seconds inf": c("plan", "-", stdin="shots:\n  - prompt: a\n"
                                     "    seconds: .inf\n", expect="finite"),
    "structured model empty": c("plan", "-", stdin='{"model": "", "shots": [{"prompt": "a"}]}',
                                expect="the brief's model ''"),
    "structured model markup": c("plan", "-", stdin='{"model": "[/red]", "shots": '
                                 '[{"prompt": "a"}]}', expect="'[/red]'"),
    "structured size words": c("plan", "-", stdin='{"size": "big", "shots": [{"prompt": "a"}]}',
                               expect="the brief's size"),
    "structured broken json": c("plan", "-", stdin='{"shots": [', expect="not valid YAML/JSON"),
    "structured empty prompt": c("plan", "-", stdin='{"shots": [{"prompt": "**"}]}',
                                 expect="empty prompt"),
    "one enormous sentence": c("plan", "--text", "A kite climbs " * 400, expect=(
        "prompt is", "at most 4,000")),
    "201 shots": c("plan", "-", stdin="".join(f"- shot {i}\n" for i in range(201)),
                   expect="at most 200"),
    "a shot of 1,001 sentences": c("plan", "--text", "Go. " * 1001, expect=(
        "1,001 sentences", "at most 1,000")),
    "brief file and text": c("render", "{files}/long.txt", "--text", TEXT, expect="not both"),
    "no brief": c("render", expect="no brief"),
    "timecode backwards": c("plan", "--text", "[00:10-00:05] A kite.", expect="ends before"),
    "hint that doubles the bill": c("plan", "--text", "A gull dives. (12 s)", expect=(
        'reads "(12 s)"', "--yes")),
    "hints past the target": c("plan", "--text", "Shot 1 (10 s): a.\nShot 2 (10 s): b.",
                               "--seconds", "5", expect="make them agree"),
    "shots too short for the target": c("plan", "--text", "- a\n- b\n- c\n- d\n- e\n- f", "--model",
                                        "local/sim", "--seconds", "8", expect="shortest call"),
    # Money: a refused budget is exit 3 and writes nothing either.
    "max-usd below the estimate": c(*R, "--model", "local/sim", "--max-usd", "0.01", code=3,
                                    expect=("per-render cap", "--max-usd")),
    "daily budget spent": c(*R, "--model", "local/sim", "--take", "9", code=3,
                            expect="daily budget", SHOTLINE_DAILY_BUDGET_USD="0.5"),
    # Settings from the environment: one line naming the variable.
    "env budget words": c(*R, expect="SHOTLINE_DAILY_BUDGET_USD='abc'",
                          SHOTLINE_DAILY_BUDGET_USD="abc"),
    "env budget nan": c(*R, expect=("SHOTLINE_DAILY_BUDGET_USD='nan'", "finite"),
                        SHOTLINE_DAILY_BUDGET_USD="nan"),
    "env budget negative": c(*R, expect="SHOTLINE_MONTHLY_BUDGET_USD",
                             SHOTLINE_MONTHLY_BUDGET_USD="-5"),
    "env model empty": c(*R, expect="SHOTLINE_MODEL=''", SHOTLINE_MODEL=""),
    "env model unknown": c(*R, expect="unknown model", SHOTLINE_MODEL="nope/nothing"),
    "env concurrency json": c(*R, expect="SHOTLINE_PROVIDER_CONCURRENCY",
                              SHOTLINE_PROVIDER_CONCURRENCY="{bad"),
    "env concurrency 0": c(*R, expect="SHOTLINE_CONCURRENCY='0'", SHOTLINE_CONCURRENCY="0"),
    "env poll inf": c(*R, expect="SHOTLINE_POLL_INTERVAL", SHOTLINE_POLL_INTERVAL="inf"),
    "env max target nan": c(*R, expect="SHOTLINE_MAX_TARGET_SECONDS",
                            SHOTLINE_MAX_TARGET_SECONDS="nan"),
    "env overrides missing": c(*R, expect="does not exist", SHOTLINE_OVERRIDES="/nope.toml"),
    "env fit": c(*R, expect="SHOTLINE_FIT", SHOTLINE_FIT="sideways"),
    "env local faults": c(*R, expect="SHOTLINE_LOCAL_FAULTS", SHOTLINE_LOCAL_FAULTS="bogus"),
    "env local latency": c(*R, expect="SHOTLINE_LOCAL_LATENCY", SHOTLINE_LOCAL_LATENCY="-1"),
    "env on show": c("show", "r_nothere", expect="SHOTLINE_LEASE_SECONDS",
                     SHOTLINE_LEASE_SECONDS="abc"),
    # Stitch: the same rules, and files that exist.
    "stitch fps 0": c("stitch", "{files}/long.txt", "-o", "out.mp4", "--fps", "0",
                      expect="--fps 0"),
    "stitch size": c("stitch", "{files}/long.txt", "-o", "out.mp4", "--size", "1x1",
                     expect="even"),
    "stitch fit": c("stitch", "{files}/long.txt", "-o", "out.mp4", "--fit", "x", expect="--fit"),
    "stitch transition": c("stitch", "{files}/long.txt", "-o", "out.mp4", "--transition", "x",
                           expect="--transition"),
    "stitch seconds nan": c("stitch", "{files}/long.txt", "-o", "out.mp4", "--seconds", "nan",
                            expect="--seconds nan"),
    "stitch missing clip": c("stitch", "{files}/nope.mp4", "-o", "out.mp4",
                             expect="is not a file"),
    "stitch output a directory": c("stitch", "{files}/long.txt", "-o", "{files}",
                                   expect="is a directory"),
    "render output a directory": c(*R, "-o", "{files}", expect="is a directory"),
    "render output unwritable": c(*R, "-o", "{files}/long.txt/x.mp4", expect="cannot write"),
    # Other commands.
    "prune negative": c("cache", "prune", "--older-than", "-1", expect="0 or more"),
    "prune nan": c("cache", "prune", "--older-than", "nan", expect="0 or more"),
    "spend by week": c("spend", "--by", "week", expect="day, provider or model"),
    "show unknown": c("show", "r_nothere", expect="no render 'r_nothere'"),
    "show markup": c("show", "[/red]", expect="no render '[/red]'"),
    "ledger unknown option": c("ledger", "--nope", expect="No such option"),
    "reroll unknown": c("reroll", "r_nothere", "--shot", "1", expect="no render 'r_nothere'"),
    "reroll prompt form": c("reroll", "{render}", "--shot", "1", "--prompt", "x",
                            expect="N=TEXT"),
    "reroll no such shot": c("reroll", "{render}", "--shot", "99", expect="no shot 99"),
    "reroll shot 0": c("reroll", "{render}", "--shot", "0", expect="--shot 0 is not allowed"),
    "reroll prompt elsewhere": c("reroll", "{render}", "--shot", "1", "--prompt", "2=x",
                                 expect="not re-rolled"),
    "reroll empty prompt": c("reroll", "{render}", "--shot", "1", "--prompt", "1=",
                             expect="--prompt '' is not allowed"),
    "reroll prompt surrogate": c("reroll", "{render}", "--shot", "1", "--prompt",
                                 "1=a" + SURROGATE, expect="lone surrogate"),
    "reroll long prompt": c("reroll", "{render}", "--shot", "1", "--prompt", "1=" + "a" * 4001,
                            expect="4000"),
    "reroll output a directory": c("reroll", "{render}", "--shot", "1", "-o", "{files}",
                                   expect="is a directory"),
    "approve unknown": c("approve", "r_nothere", expect="no render"),
    "approve twice": c("approve", "{published}", expect="is published"),
    "reject unknown": c("reject", "r_nothere", "--reason", "x", expect="no render"),
    "reject empty reason": c("reject", "{render}", "--reason", " ", expect="needs a reason"),
    "cancel unknown": c("cancel", "r_nothere", expect="no render"),
    "cancel finished": c("cancel", "{render}", expect="can be cancelled"),
    "keys empty name": c("keys", "create", "--name", "", expect="1 to 200"),
    "keys newline name": c("keys", "create", "--name", "a\nb", expect="printable"),
    "keys long name": c("keys", "create", "--name", "x" * 201, expect="1 to 200"),
    "keys unknown tenant": c("keys", "create", "--name", "x", "--tenant", "t_nothere",
                             expect="no tenant"),
    "keys revoke unknown": c("keys", "revoke", "key_nothere", expect="no key"),
    "budget unknown tenant": c("tenants", "budget", "t_nothere", "--daily", "5",
                               expect="no tenant"),
    "budget words": c("tenants", "budget", "{tenant}", "--daily", "abc", expect="'abc'"),
    "budget nan": c("tenants", "budget", "{tenant}", "--daily", "nan", expect="from 0 to"),
    "budget negative": c("tenants", "budget", "{tenant}", "--monthly", "-1", expect="from 0 to"),
    "budget 1e20": c("tenants", "budget", "{tenant}", "--monthly", "1e20", expect="from 0 to"),
    "webhook ftp": c("webhooks", "add", "ftp://93.184.216.34/x", "--tenant", "{tenant}",
                     expect="only http and https"),
    "webhook private": c("webhooks", "add", "http://127.0.0.1/x", "--tenant", "{tenant}",
                         expect="loopback"),
    "webhook port 0": c("webhooks", "add", "http://93.184.216.34:0/x", "--tenant", "{tenant}",
                        expect="port 0"),
    "webhook port 8080": c("webhooks", "add", "http://93.184.216.34:8080/x", "--tenant",
                           "{tenant}", expect="only ports 80 and 443"),
    "webhook password": c("webhooks", "add", "http://u:secretpw@93.184.216.34/", "--tenant",
                          "{tenant}", expect="user name or password"),
    "webhook words": c("webhooks", "add", "not a url", "--tenant", "{tenant}", expect="scheme"),
    "webhook unknown tenant": c("webhooks", "add", "http://93.184.216.34/x", "--tenant",
                                "t_nothere", expect="no tenant"),
    "webhook remove unknown": c("webhooks", "remove", "we_nothere", "--tenant", "{tenant}",
                                expect="has no webhook endpoint"),
    "serve port 0": c("serve", "--port", "0", expect="--port"),
    "serve port 70000": c("serve", "--port", "70000", expect="--port"),
    "unknown command": c("renderr", expect="No such command"),
}


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A home with real work in it: two finished renders (one published), clips, ledger rows,
    a tenant with a key and a webhook endpoint; and the odd files the cases name."""
    root = tmp_path_factory.mktemp("bad-inputs-cli")
    home, files = root / "home", root / "files"
    files.mkdir()
    settings = Settings(home=home, poll_interval=0.05)
    opts: dict[str, Any] = dict(model="local/sim", size="640x360", settings=settings)
    first = shotline.render(BRIEF, seconds=8, **opts)
    second = shotline.render("A boat drifts past the pier.", seconds=4, **opts)
    db, _ = open_store(settings)
    tenant = tenants.create_key(db, "acme").tenant
    from shotline.service import actions

    actions.approve(db, None, second.render_id, operator=True)
    db.close()
    (files / "binary.toml").write_bytes(bytes(range(256)) * 4)
    override = '[models."local/sim"]\nreason = "test"\nexpires = 2099-01-01\n'
    (files / "neg.toml").write_text(override + 'prices = { "360p" = -10.0, "720p" = -10.0 }\n')
    (files / "nan.toml").write_text(override + 'prices = { "360p" = nan, "720p" = 1 }\n')
    (files / "text.toml").write_text(override + "prices = 5\n")
    (files / "noreason.toml").write_text('[models."local/sim"]\nmax_seconds = 8\n')
    (files / "broken.toml").write_text('[models."local/sim"\n')
    (files / "latin1.txt").write_bytes("Shot 1: Café au lait.".encode("latin-1"))
    (files / "long.txt").write_text("A kite. " * 31_250)
    yield {"home": home, "files": files, "render": first.render_id,
           "published": second.render_id, "tenant": tenant}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_refuses_and_changes_nothing(name: str, cli_home: dict[str, Any],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    case = CLI_CASES[name]
    home = cli_home["home"]
    monkeypatch.setenv("SHOTLINE_HOME", str(home))
    argv = [a.format(**{k: v for k, v in cli_home.items() if k != "home"}) for a in case.argv]
    db = Database.for_home(home)
    before = snapshot(home, db)
    with CliRunner().isolation(input=case.stdin, env=case.env) as (out, err, _):
        code = cli.run(argv)
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    after = snapshot(home, db)
    db.close()
    assert code == case.code, (code, stderr)
    assert stdout == "" and "Traceback" not in stderr, stderr
    for words in case.expect:
        assert words in stderr, f"{words!r} not in {stderr!r}"
    if stderr.startswith("error: "):  # our own errors: one line, what and what is allowed
        assert stderr.count("\n") == 1, stderr
    else:  # a usage error, shown by Click the way it shows them
        assert "Error: " in stderr and "Usage: " in stderr, stderr
    assert not changes(before, after), changes(before, after)


def test_enough_cases() -> None:
    assert len(CLI_CASES) + len(API_CASES) >= 150, len(CLI_CASES) + len(API_CASES)


@pytest.mark.parametrize("stdin,args,words", [
    (b"Shot 1: Caf\xe9", ["render", "-"], "not UTF-8 text"),
    (DEEP_JSON.encode(), ["plan", "-"], "nests more than 32 levels"),
    (b"x", ["render", "-", "--model", "[/red]"], "--model '[/red]'"),
])
def test_a_few_as_real_processes(tmp_path: Path, stdin: bytes, args: list[str],
                                 words: str) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "SHOTLINE_HOME": str(home), "SHOTLINE_DAILY_BUDGET_USD": "7"}
    proc = subprocess.run([sys.executable, "-m", "shotline", *args], input=stdin,
                          capture_output=True, env=env, timeout=60)
    stderr = proc.stderr.decode()
    assert proc.returncode == 2 and proc.stdout == b"", stderr
    assert stderr.startswith("error: ") and words in stderr and stderr.count("\n") == 1, stderr
    assert not home.exists()  # refused before anything was made, the database included


def test_bad_environment_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "SHOTLINE_HOME": str(tmp_path / "h"), "SHOTLINE_DAILY_BUDGET_USD": "abc"}
    proc = subprocess.run([sys.executable, "-m", "shotline", "render", "--text", "A kite."],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("error: bad setting SHOTLINE_DAILY_BUDGET_USD='abc': Input should be "
                           "a valid decimal\n")


def test_markup_in_data_prints_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts, names and paths are text: ``[bold]x`` stays ``[bold]x`` and ``[redacted]``
    stays visible, in tables and in plain lines."""
    monkeypatch.setenv("SHOTLINE_HOME", str(tmp_path / "h"))
    monkeypatch.setattr(cli, "out", Console(width=200))  # wide enough for every column
    with CliRunner().isolation() as (out, err, _):
        code = cli.run(["plan", "--text", "A kite [bold]x climbs past [redacted] and [/red]."])
        printed = out.getvalue().decode()
    assert code == 0, err.getvalue()
    assert "[bold]x" in printed and "[redacted]" in printed and "[/red]" in printed
    db, _ = open_store(Settings(home=tmp_path / "h"))
    tenants.create_key(db, "[bold]Acme[/bold] [redacted]")
    db.close()
    with CliRunner().isolation() as (out, err, _):
        assert cli.run(["keys", "list"]) == 0
        listed = out.getvalue().decode()
    assert "[bold]Acme[/bold]" in listed and "[redacted]" in listed


# --- the HTTP API ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    method: str
    path: str
    status: int
    expect: str
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, Any] = field(default_factory=dict)  # str, or bytes as sent
    auth: bool = True


def a(method: str, path: str, status: int, expect: str, body: Any = None, *,
      raw: bytes | str | None = None, auth: bool = True, **headers: str | bytes) -> Api:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    return Api(method, path, status, expect, body, data,
               {k.replace("_", "-"): v for k, v in headers.items()}, auth)


def r(status: int, expect: str, **body: Any) -> Api:
    """POST /v1/renders with ``body`` (a brief added unless given)."""
    return a("POST", "/v1/renders", status, expect, {"brief": BRIEF, "seconds": 4, **body})


API_CASES: dict[str, Api] = {
    # POST /v1/renders: the body.
    "no body": a("POST", "/v1/renders", 422, "not a JSON object", raw=b""),
    "not json": a("POST", "/v1/renders", 422, "not a JSON object", raw=b"{brief: x"),
    "a json list": a("POST", "/v1/renders", 422, "the request body", raw=b"[1, 2]"),
    "no brief": a("POST", "/v1/renders", 422, "brief is required", {"seconds": 4}),
    "empty brief": r(422, "brief '' is not allowed", brief=""),
    "brief 200,001 characters": r(422, "200,000 characters", brief="a" * 200_001),
    "brief lone surrogate": a("POST", "/v1/renders", 422, "surrogate",
                              raw='{"brief": "Caf\\udce9"}'),
    "brief NUL": r(422, "NUL", brief="a\x00b"),
    "brief json 50k deep": r(422, "nests more than 32 levels", brief=DEEP_JSON[:400_000]),
    "brief yaml deep": r(422, "nests more than 32 levels", brief=DEEP_YAML),
    "brief empty": r(422, "the brief is empty", brief="   "),
    "brief enormous sentence": r(422, "at most 4,000", brief="A kite climbs " * 400),
    "brief seed 2**200": r(422, "the brief's seed", brief="seed: " + str(2**200) +
                           "\nshots:\n  - prompt: a kite\n", seconds=None),
    "brief 201 shots": r(422, "at most 200", brief="".join(f"- s{i}\n" for i in range(201)),
                         seconds=None),
    "brief 50,000 sentences": r(422, "at most 1,000", brief="Go. " * 50_000, seconds=600),
    "brief hint doubles": r(422, 'reads "(12 s)"', brief="A gull dives. (12 s)", seconds=None),
    "seconds 0": r(422, "seconds 0", seconds=0),
    "seconds negative": r(422, "seconds -1", seconds=-1),
    "seconds words": r(422, "seconds 'x'", seconds="x"),
    "seconds 1e400": a("POST", "/v1/renders", 422, "seconds",
                       raw='{"brief": "A kite.", "seconds": 1e400}'),
    "seconds NaN": a("POST", "/v1/renders", 422, "seconds", raw='{"brief": "A kite.", '
                     '"seconds": NaN}'),
    "seconds past the cap": r(422, "SHOTLINE_MAX_TARGET_SECONDS", seconds=100_000),
    "fps 0": r(422, "fps 0 is not allowed: a whole number of frames a second from 1 to 120",
               fps=0),
    "fps 121": r(422, "fps 121", fps=121),
    "fps 2.5": r(422, "fps 2.5", fps=2.5),
    "fps words": r(422, "fps 'fast'", fps="fast"),
    "seed negative": r(422, "seed -1 is not allowed: a whole number from 0 to 4294967295",
                       seed=-1),
    "seed 2**32": r(422, "seed 4294967296", seed=2**32),
    "seed 2**200": r(422, "seed (a 201-bit number)", seed=2**200),
    "seed 1.5": r(422, "seed 1.5", seed=1.5),
    "model empty": r(422, "model '' is not allowed", model=""),
    "model no slash": r(422, "PROVIDER/MODEL", model="local"),
    "model unknown": r(422, "unknown model 'nope/nothing'", model="nope/nothing"),
    "model markup": r(422, "model '[/red]'", model="[/red]"),
    "model newline": r(422, "PROVIDER/MODEL", model="local/preview\n"),
    "model sunset": r(422, "shut down", model="openai/sora-2"),
    "model without key": r(422, "FAL_KEY", model="fal/kling-video-v2.6-pro", seconds=10),
    "size zero": r(422, "size '0x0'", size="0x0"),
    "size odd": r(422, "even", size="641x360"),
    "size words": r(422, "size 'big'", size="big"),
    "size not offered": r(422, "allowed sizes", size="1920x1080", model="local/sim",
                          seconds=8),
    "transition wipe": r(422, "transition 'wipe'", transition="wipe"),
    "transition long": r(422, "crossfade:SECONDS", transition="crossfade:9"),
    "max_usd 1e20": r(422, "from 0 to 1,000,000,000", max_usd=1e20),
    "max_usd negative": r(422, "max_usd -1", max_usd=-1),
    "max_usd words": r(422, "max_usd 'abc'", max_usd="abc"),
    "max_usd NaN string": r(422, "finite number", max_usd="NaN"),
    "max_usd too small": r(402, "per-render cap", max_usd=0.01, model="local/sim", seconds=8),
    "webhook ftp": r(422, "only http and https", webhook_url="ftp://93.184.216.34/x"),
    "webhook loopback": r(422, "loopback", webhook_url="http://127.0.0.1/x"),
    "webhook port 0": r(422, "port 0", webhook_url="http://93.184.216.34:0/x"),
    "webhook userinfo": r(422, "user name or password", webhook_url="http://u:p@93.184.216.34/"),
    "webhook long": r(422, "webhook_url", webhook_url="http://93.184.216.34/" + "x" * 2000),
    "webhook spaces": r(422, "webhook_url", webhook_url="not a url"),
    "webhook surrogate": a("POST", "/v1/renders", 422, "surrogate",
                           raw='{"brief": "A kite.", "webhook_url": "http://a/\\udce9"}'),
    "unknown field": r(422, "colour is not a known field", colour="red"),
    "yes maybe": r(422, "yes 'maybe'", yes="maybe"),
    "auto_approve words": r(422, "auto_approve", auto_approve="sometimes"),
    "idempotency key too long": a("POST", "/v1/renders", 422, "idempotency-key",
                                  {"brief": BRIEF}, Idempotency_Key="k" * 256),
    "idempotency key not ascii": a("POST", "/v1/renders", 422, "printable ASCII",
                                   {"brief": BRIEF}, Idempotency_Key="clé".encode("latin-1")),
    "body over the limit": a("POST", "/v1/renders", 413, "over the limit",
                             raw=b'{"brief": "' + b"a" * 1_100_000 + b'"}'),
    # Who is asking.
    "no key": a("GET", "/v1/renders", 401, "a valid API key is needed", auth=False),
    "bad key": a("GET", "/v1/renders", 401, "a valid API key", auth=False,
                 Authorization="Bearer sl_live_nope"),
    "basic auth": a("GET", "/v1/renders", 401, "a valid API key", auth=False,
                    Authorization="Basic dXNlcjpwdw=="),
    # Listing, reading, streaming.
    "limit 0": a("GET", "/v1/renders?limit=0", 422, "limit '0'"),
    "limit 101": a("GET", "/v1/renders?limit=101", 422, "limit '101'"),
    "limit words": a("GET", "/v1/renders?limit=abc", 422, "limit 'abc'"),
    "cursor unknown": a("GET", "/v1/renders?cursor=r_nothere", 404, "no render 'r_nothere'"),
    "query misspelt": a("GET", "/v1/renders?limt=5", 422, "unknown query parameter 'limt'"),
    "render unknown": a("GET", "/v1/renders/r_nothere", 404, "no render 'r_nothere'"),
    "render id huge": a("GET", "/v1/renders/" + "r" * 65, 422, "render_id"),
    "events unknown": a("GET", "/v1/renders/r_nothere/events", 404, "no render"),
    "last-event-id 40 digits": a("GET", "/v1/renders/{render}/events", 422, "last-event-id",
                                 Last_Event_ID="1" * 40),
    "last-event-id past any": a("GET", "/v1/renders/{render}/events", 422, "past any event id",
                                Last_Event_ID="9999999999"),
    "last-event-id words": a("GET", "/v1/renders/{render}/events", 422, "last-event-id",
                             Last_Event_ID="abc"),
    "last-event-id superscript": a("GET", "/v1/renders/{render}/events", 422, "last-event-id",
                                   Last_Event_ID="²".encode("latin-1")),
    "ledger limit 0": a("GET", "/v1/ledger?limit=0", 422, "limit '0'"),
    "ledger limit 1001": a("GET", "/v1/ledger?limit=1001", 422, "limit '1001'"),
    "spend by week": a("GET", "/v1/spend?by=week", 422, "by 'week'"),
    "deliveries misspelt": a("GET", "/v1/webhooks/deliveries?render=r_x", 422, "render_id"),
    # Review actions.
    "approve unknown": a("POST", "/v1/renders/r_nothere/approve", 404, "no render"),
    "approve twice": a("POST", "/v1/renders/{published}/approve", 409, "is published"),
    "reject no body": a("POST", "/v1/renders/{render}/reject", 422, "is required"),
    "reject empty reason": a("POST", "/v1/renders/{render}/reject", 422, "reason ''",
                             {"reason": ""}),
    "reject blank reason": a("POST", "/v1/renders/{render}/reject", 422, "needs a reason",
                             {"reason": "   "}),
    "reject long reason": a("POST", "/v1/renders/{render}/reject", 422, "reason",
                            {"reason": "x" * 2001}),
    "reject surrogate": a("POST", "/v1/renders/{render}/reject", 422, "surrogate",
                          raw='{"reason": "\\ud800"}'),
    "reject not json": a("POST", "/v1/renders/{render}/reject", 422, "JSON", raw=b"{x",
                         Content_Type="application/json"),
    "reroll no shots": a("POST", "/v1/renders/{render}/reroll", 422, "shots", {"shots": []}),
    "reroll shot 0": a("POST", "/v1/renders/{render}/reroll", 422, "shots.0 0", {"shots": [0]}),
    "reroll shot 99": a("POST", "/v1/renders/{render}/reroll", 422, "no shot 99",
                        {"shots": [99]}),
    "reroll shot 201": a("POST", "/v1/renders/{render}/reroll", 422, "shots.0 201",
                         {"shots": [201]}),
    "reroll huge shot": a("POST", "/v1/renders/{render}/reroll", 422, "shots.0",
                          {"shots": [10**22]}),
    "reroll prompt surrogate": a("POST", "/v1/renders/{render}/reroll", 422, "surrogate",
                                 raw='{"shots": [1], "prompts": {"1": "a\\udce9"}}'),
    "reroll prompt long": a("POST", "/v1/renders/{render}/reroll", 422, "4000",
                            {"shots": [1], "prompts": {"1": "a" * 4001}}),
    "reroll prompt elsewhere": a("POST", "/v1/renders/{render}/reroll", 422, "not re-rolled",
                                 {"shots": [1], "prompts": {"2": "a boat"}}),
    "reroll published": a("POST", "/v1/renders/{published}/reroll", 409, "is published",
                          {"shots": [1]}),
    "cancel finished": a("POST", "/v1/renders/{render}/cancel", 409, "can be cancelled"),
    "cancel unknown": a("POST", "/v1/renders/r_nothere/cancel", 404, "no render"),
    # Webhook deliveries.
    "replay 22 digits": a("POST", "/v1/webhooks/deliveries/" + "9" * 22 + "/replay", 422,
                          "delivery_id"),
    "replay 0": a("POST", "/v1/webhooks/deliveries/0/replay", 422, "delivery_id '0'"),
    "replay words": a("POST", "/v1/webhooks/deliveries/abc/replay", 422, "delivery_id 'abc'"),
    "replay unknown": a("POST", "/v1/webhooks/deliveries/5/replay", 404, "no failed delivery"),
    # Files and ranges.
    "media unknown": a("GET", "/v1/media/m_nothere", 404, "no such file"),
    "media long token": a("GET", "/v1/media/" + "m" * 65, 422, "token"),
    "range words": a("GET", "{media}", 400, "is not FIRST-LAST", Range="bytes=abc"),
    "range other unit": a("GET", "{media}", 400, "is not understood", Range="items=0-1"),
    "range backwards": a("GET", "{media}", 400, "ends before it starts", Range="bytes=5-1"),
    "range empty": a("GET", "{media}", 400, "FIRST-LAST", Range="bytes="),
    "range no equals": a("GET", "{media}", 400, "is not understood", Range="0-10"),
    "range past the end": a("GET", "{media}", 416, "past the end", Range="bytes=99999999-"),
    "range 40 digits": a("GET", "{media}", 416, "past the end", Range="bytes=" + "9" * 40 + "-"),
    "range empty suffix": a("GET", "{media}", 416, "past the end", Range="bytes=-0"),
    "range one bad of two": a("GET", "{media}", 400, "FIRST-LAST", Range="bytes=0-1,x"),
    # Methods.
    "delete renders": a("DELETE", "/v1/renders", 405, "Method Not Allowed"),
    "put health": a("PUT", "/healthz", 405, "Method Not Allowed"),
}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with a tenant whose render awaits review, one published, and their files."""
    home = tmp_path_factory.mktemp("bad-inputs-api") / "home"
    settings = service_settings(home, allow_private_webhooks=False, max_body_bytes=1_000_000,
                                local_latency=0.0)
    with running(settings) as server:
        key = server.new_key()
        client = server.client(key.key)
        made = []
        for brief in (BRIEF, "A boat drifts past the pier."):
            answer = client.post("/v1/renders", json={"brief": brief, "seconds": 4,
                                                      "size": "640x360"})
            assert answer.status_code == 202, answer.text
            made.append(wait_status(client, answer.json()["id"], "awaiting_review"))
        assert client.post(f"/v1/renders/{made[1]['id']}/approve").status_code == 200
        yield {"server": server, "client": client, "home": home, "settings": settings,
               "render": made[0]["id"], "published": made[1]["id"],
               "media": made[0]["poster_url"]}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_refuses_in_its_error_shape_and_changes_nothing(
        name: str, api_server: dict[str, Any]) -> None:
    case = API_CASES[name]
    home, client = api_server["home"], api_server["client"]
    path = case.path.format(**{k: v for k, v in api_server.items() if isinstance(v, str)})
    headers = dict(case.headers)
    if case.method == "POST":  # a refused request must not keep its Idempotency-Key either
        headers.setdefault("Idempotency-Key", str(uuid.uuid4()))
    if case.raw is not None:
        headers.setdefault("Content-Type", "application/json")
    request: dict[str, Any] = {"headers": headers}
    if case.raw is not None:
        request["content"] = case.raw
    elif case.body is not None:
        request["json"] = case.body
    db, _ = open_store(api_server["settings"])
    before = snapshot(home, db)
    sender = client if case.auth else httpx.Client(base_url=api_server["server"].url, timeout=30)
    try:
        answer = sender.request(case.method, path, **request)
    finally:
        if not case.auth:
            sender.close()
    after = snapshot(home, db)
    db.close()
    assert answer.status_code == case.status, answer.text
    assert answer.headers["content-type"] == "application/json", answer.headers
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert case.expect in body["error"]["message"], body
    assert not changes(before, after), changes(before, after)
    if case.status == 416:
        assert answer.headers["content-range"].startswith("bytes */")


def test_a_good_range_still_works(api_server: dict[str, Any]) -> None:
    part = api_server["client"].get(api_server["media"], headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and len(part.content) == 10
    assert part.headers["content-range"].startswith("bytes 0-9/")


def test_errors_of_the_framework_are_in_the_same_shape(api_server: dict[str, Any]) -> None:
    client = api_server["client"]
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert json.loads(client.get("/openapi.json").text)["paths"]["/v1/renders"]["post"][
        "requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RenderRequest"}
