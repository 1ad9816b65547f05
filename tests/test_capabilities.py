from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from shotline.core.capabilities import OverrideExpiredWarning, load_table, table_for, tier_of
from shotline.errors import CapabilityError, OverrideError

TODAY = dt.date(2026, 11, 24)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "overrides.toml"
    path.write_text(body, "utf-8")
    return path


def test_override_widens_an_entry_and_is_marked(tmp_path: Path) -> None:
    path = write(tmp_path, """
[models."local/sim"]
reason = "the vendor started accepting 10 s calls on 2026-11-20"
expires = 2027-03-01
durations = [4, 6, 8, 10]
max_seconds = 10
""")
    caps = load_table(path).get("local/sim", today=TODAY)
    assert caps.durations == (4, 6, 8, 10) and caps.max_seconds == 10
    assert caps.override is not None and caps.override.fields == ("durations", "max_seconds")
    assert caps.prices == load_table().get("local/sim").prices  # untouched fields stay


def test_override_can_add_a_model(tmp_path: Path) -> None:
    path = write(tmp_path, """
[models."acme/new-model"]
reason = "released yesterday, not in the table yet"
expires = 2027-01-01
duration_range = [3, 12]
max_seconds = 12
sizes = ["1280x720"]
fps = [24]
audio = "none"
prices = { "720p" = 0.2 }
""")
    caps = load_table(path).get("acme/new-model", today=TODAY)
    assert caps.durations == tuple(range(3, 13)) and caps.wire_model == "new-model"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('[models."local/sim"]\nexpires = 2027-01-01\nmax_seconds = 10\n', "no reason"),
        ('[models."local/sim"]\nreason = "x"\nmax_seconds = 10\n', "needs expires"),
        ('[models."local/sim"]\nreason = "x"\nexpires = "soon"\nmax_seconds = 10\n', "needs expires"),
        ('[models."local/sim"]\nreason = "x"\nexpires = 2027-01-01\ndurations = [4, 20]\n',
         "max_seconds"),
        ('[models."local/sim"]\nreason = "x"\nexpires = 2027-01-01\ncolour = "red"\n',
         "colour"),
        ("not toml [", "cannot read"),
    ],
)
def test_bad_overrides_are_refused(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(OverrideError, match=match):
        load_table(write(tmp_path, body))


def test_expired_override_warns_on_every_use(tmp_path: Path) -> None:
    table = load_table(write(tmp_path, """
[models."local/sim"]
reason = "temporary promo price"
expires = 2026-10-01
prices = { "*" = 0.05 }
"""))
    for _ in range(2):
        with pytest.warns(OverrideExpiredWarning, match="expired on 2026-10-01.*promo"):
            caps = table.get("local/sim", today=TODAY)
    assert str(caps.prices["*"]) == "0.05"  # still applied: dropping it could change a price


def test_unknown_model_suggests() -> None:
    with pytest.raises(CapabilityError, match="unknown model 'local/simm'"):
        load_table().get("local/simm")


def test_tiers() -> None:
    assert tier_of("1280x720") == tier_of("720x1280") == "720p"
    assert tier_of("3840x2160") == "4k"


def test_the_shared_table_is_parsed_once_and_an_edited_overrides_file_still_applies(
        tmp_path: Path) -> None:
    path = tmp_path / "overrides.toml"
    first = table_for(path)
    assert table_for(path) is first  # no file yet: one parse, kept
    write(tmp_path, """
[models."local/sim"]
reason = "test"
expires = 2099-01-01
max_seconds = 10
durations = [4, 6, 8, 10]
""")
    edited = table_for(path)
    assert edited is not first and edited.get("local/sim").max_seconds == 10
    assert table_for(path) is edited
    # Same size, new contents: caught by the modification time as well as the size.
    path.write_text(path.read_text("utf-8").replace("10]", "12]").replace("= 10", "= 12"), "utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert table_for(path).get("local/sim").durations[-1] == 12
    path.unlink()
    assert table_for(path).get("local/sim").max_seconds == 8
