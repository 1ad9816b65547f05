from __future__ import annotations

import json
import os
from pathlib import Path

from shotline.service.tenants import authenticate
from shotline.store.db import Database

from .test_cli import as_json, run


def home_db() -> Database:
    return Database.for_home(Path(os.environ["SHOTLINE_HOME"]))


def test_keys_create_json_authenticates() -> None:
    made = as_json("keys", "create", "--name", "Acme Films")
    assert {"key", "tenant", "webhook_secret"} <= set(made)
    assert made["webhook_secret"].startswith("whsec_")
    db = home_db()
    try:
        assert authenticate(db, made["key"]) == made["tenant"]
    finally:
        db.close()
    more = as_json("keys", "create", "--name", "ci", "--tenant", made["tenant"])
    assert more["tenant"] == made["tenant"] and more["key"] != made["key"]


def test_keys_create_says_the_key_is_shown_once() -> None:
    proc = run("keys", "create", "--name", "acme")
    assert proc.returncode == 0, proc.stderr
    assert "sl_live_" in proc.stdout and "will not be shown again" in proc.stdout
    assert "whsec_" in proc.stdout and "t_" in proc.stdout


def test_keys_list_never_shows_the_key_and_revoke_works() -> None:
    made = as_json("keys", "create", "--name", "acme")
    for listing in (run("keys", "list").stdout, run("keys", "list", "--json").stdout):
        assert made["key_id"] in listing and made["key"] not in listing
        assert made["key"][:12] in listing  # the visible prefix, to tell keys apart
    proc = run("keys", "revoke", made["key_id"])
    assert proc.returncode == 0 and made["key_id"] in proc.stdout
    db = home_db()
    try:
        assert authenticate(db, made["key"]) is None
    finally:
        db.close()
    assert as_json("keys", "list")[0]["revoked_at"] is not None


def test_unknown_key_tenant_and_bad_name_exit_2() -> None:
    proc = run("keys", "revoke", "key_nope")
    assert proc.returncode == 2 and "no key 'key_nope'" in proc.stderr
    proc = run("keys", "create", "--name", "x", "--tenant", "t_nope")
    assert proc.returncode == 2 and "no tenant 't_nope'" in proc.stderr
    proc = run("keys", "create", "--name", "")
    assert proc.returncode == 2 and "name must be" in proc.stderr
    assert as_json("tenants", "list") == []


def test_tenant_budgets() -> None:
    tenant = as_json("keys", "create", "--name", "acme")["tenant"]
    row = as_json("tenants", "budget", tenant, "--daily", "12.50")
    assert row["daily_budget_usd"] == "12.5" and row["monthly_budget_usd"] is None
    row = as_json("tenants", "budget", tenant, "--monthly", "300")
    assert row["daily_budget_usd"] == "12.5" and row["monthly_budget_usd"] == "300"
    row = as_json("tenants", "budget", tenant, "--daily", "none")
    assert row["daily_budget_usd"] is None and row["monthly_budget_usd"] == "300"
    listed = as_json("tenants", "list")
    assert [(t["id"], t["active_keys"]) for t in listed] == [(tenant, 1)]
    assert "whsec_" not in json.dumps(listed)
    proc = run("tenants", "budget", tenant, "--daily", "lots")
    assert proc.returncode == 2 and "not an amount" in proc.stderr
