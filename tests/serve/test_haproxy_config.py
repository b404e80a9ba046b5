"""`appliance serve haproxy-config` prints a configuration the real HAProxy accepts; replicas are private only."""

from __future__ import annotations

import subprocess

import pytest

from appliance.errors import UsageError
from appliance.serve import replicas
from tests.conftest import require_tool, run_appliance


def test_the_configuration_is_one_haproxy_accepts(tmp_path):
    haproxy = require_tool("haproxy")
    made = run_appliance("serve", "haproxy-config", "--listen", "192.168.7.1:8737", "--replica", "192.168.7.11:8737",
                         "--replica", "192.168.7.12:9000", "--check-interval", "1.5")
    assert made.returncode == 0, made.stderr
    text = made.stdout
    (tmp_path / "shelter.cfg").write_text(text)
    checked = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "shelter.cfg")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "server r1 192.168.7.11:8737 check inter 1500ms" in text and "server r2 192.168.7.12:9000" in text
    assert "timeout check 5s" in text  # a busy replica's late /health is not a replica down
    assert "balance leastconn" in text and "retry-on conn-failure" in text and "uri /health" in text
    assert "hdr Host 192.168.7.1" in text and "--allow-host 192.168.7.1" in text
    assert "hdr Retry-After" in text


@pytest.mark.parametrize("given", ["8.8.8.8:8737", "example.org:80", "10.0.0.1", "10.0.0.1:0", "[2001:db8::1]:80"])
def test_a_replica_must_be_a_private_address_with_a_port(given):
    with pytest.raises(UsageError):
        replicas.parse(given)


def test_status_names_a_replica_that_is_down():
    # a loopback port nothing listens on: the command says DOWN and exits 1, it does not hang
    done = run_appliance("serve", "status", "--replica", "127.0.0.1:9")
    assert done.returncode == 1 and "DOWN" in done.stdout


def test_status_and_revoke_with_replicas_are_the_only_serve_commands_left_unlocked():
    from appliance.system import netlock

    assert netlock.lan_command("serve status", ["serve", "status", "--replica", "10.0.0.2:8737"])
    assert netlock.lan_command("serve keys", ["serve", "keys", "revoke", "x", "--replica", "10.0.0.2:1"])
    assert not netlock.lan_command("serve keys", ["serve", "keys", "revoke", "x"])
    assert not netlock.lan_command("serve shelter", ["serve", "shelter", "init"])
    assert netlock.deferred("serve") and netlock.deferred("serve 8737")
    for locked in ("serve keys", "serve shelter", "serve haproxy-config", "serve status"):
        assert not netlock.deferred(locked)
