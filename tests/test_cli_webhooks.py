from __future__ import annotations

import json

from shotline.settings import Settings
from shotline.store.db import Database, tenants

from .test_cli import run


def add_tenant(tenant_id: str) -> None:
    db = Database.for_home(Settings().home)
    with db.write() as conn:
        conn.execute(tenants.insert().values(id=tenant_id, name="acme", created_at=0.0,
                                             webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    db.close()


def test_add_list_remove() -> None:
    add_tenant("t_cli")
    proc = run("webhooks", "add", "https://93.184.215.14/in", "--tenant", "t_cli", "--json")
    assert proc.returncode == 0, proc.stderr
    made = json.loads(proc.stdout)
    assert made["id"].startswith("we_") and made["secret"].startswith("whsec_")

    proc = run("webhooks", "list", "--tenant", "t_cli", "--json")
    (listed,) = json.loads(proc.stdout)
    assert listed["id"] == made["id"] and listed["url"] == "https://93.184.215.14/in"
    assert made["secret"] not in proc.stdout
    human = run("webhooks", "list", "--tenant", "t_cli")
    assert made["id"] in human.stdout and "enabled" in human.stdout

    proc = run("webhooks", "remove", made["id"], "--tenant", "t_cli")
    assert proc.returncode == 0 and f"removed {made['id']}" in proc.stdout
    assert json.loads(run("webhooks", "list", "--tenant", "t_cli", "--json").stdout) == []
    proc = run("webhooks", "remove", made["id"], "--tenant", "t_cli")
    assert proc.returncode == 2 and "has no webhook endpoint" in proc.stderr


def test_unsafe_url_and_unknown_tenant_exit_2() -> None:
    add_tenant("t_cli")
    proc = run("webhooks", "add", "http://169.254.169.254/latest", "--tenant", "t_cli")
    assert proc.returncode == 2 and "link-local" in proc.stderr and proc.stdout == ""
    proc = run("webhooks", "add", "https://93.184.215.14/in", "--tenant", "t_nobody")
    assert proc.returncode == 2 and "no tenant 't_nobody'" in proc.stderr
