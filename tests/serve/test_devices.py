"""Device keys and join links (appliance.serve.devices): stored hashed, revocable while a server runs, one use."""

from __future__ import annotations

import json
import time

import pytest

from appliance.errors import UsageError
from appliance.serve.devices import DeviceKeys, JoinTokens, key_hash
from tests.conftest import run_appliance


def test_a_key_is_stored_only_as_its_hash_and_names_its_device(tmp_path):
    keys = DeviceKeys(tmp_path / "devices.json")
    key = keys.add("kitchen-tablet")
    stored = (tmp_path / "devices.json").read_text()
    assert key not in stored and key_hash(key) in stored
    assert keys.who(key) == "kitchen-tablet"
    assert keys.who(key + "x") is None and keys.who("") is None and keys.who(None) is None
    assert keys.who("a" * 10_000) is None


def test_revoking_reaches_a_reader_that_already_loaded_the_file(tmp_path):
    path = tmp_path / "devices.json"
    server_side, owner_side = DeviceKeys(path), DeviceKeys(path)
    key = owner_side.add("phone")
    assert server_side.who(key) == "phone"
    time.sleep(0.01)  # a new mtime even on a coarse clock
    owner_side.revoke("phone")
    assert server_side.who(key) is None
    assert [d.revoked is not None for d in server_side.list()] == [True]
    # the name can be issued again, with a new key; the old one stays refused
    again = owner_side.add("phone")
    assert server_side.who(again) == "phone" and server_side.who(key) is None


def test_bad_names_and_a_damaged_file_let_nobody_in(tmp_path):
    keys = DeviceKeys(tmp_path / "devices.json")
    for name in ("", "../x", "a b", "x" * 41, "-lead"):
        with pytest.raises(UsageError):
            keys.add(name)
    key = keys.add("ok")
    with pytest.raises(UsageError):
        keys.add("ok")
    (tmp_path / "devices.json").write_text("{not json")
    assert keys.who(key) is None


def test_a_join_token_works_once_and_expires():
    joins = JoinTokens(ttl_s=0.2)
    token = joins.issue()
    assert joins.redeem(token) and not joins.redeem(token)
    late = joins.issue()
    time.sleep(0.3)
    assert not joins.redeem(late)
    assert not joins.redeem("") and not joins.redeem(None) and not joins.redeem("forged")


def test_the_keys_commands(appliance_home):
    added = run_appliance("serve", "keys", "add", "radio-room")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("apl_") and "shown once" in added.stderr
    listed = run_appliance("serve", "keys", "list", "--json")
    assert [d["name"] for d in json.loads(listed.stdout)] == ["radio-room"]
    assert "key_sha256" not in listed.stdout and key not in listed.stdout
    assert run_appliance("serve", "keys", "revoke", "radio-room").returncode == 0
    again = run_appliance("serve", "keys", "revoke", "radio-room")
    assert again.returncode == 2 and "no device 'radio-room'" in again.stderr
    assert "revoked" in run_appliance("serve", "keys", "list").stdout


def test_a_shelter_key_made_on_one_laptop_works_on_another_until_revoked(tmp_path):
    first, second = DeviceKeys(tmp_path / "a" / "devices.json"), DeviceKeys(tmp_path / "b" / "devices.json")
    first.shelter.init()
    second.shelter.join(first.shelter.export())
    assert first.shelter.info()["id"] == second.shelter.info()["id"]
    key = first.add("phone")
    assert key.startswith("aps_") and second.who(key) == "phone" and first.who(key) == "phone"
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert second.who(forged) is None
    outsider = DeviceKeys(tmp_path / "c" / "devices.json")
    outsider.shelter.init()
    assert outsider.who(key) is None  # another shelter's secret
    # a revocation made on the first laptop, carried to the second as the signed list
    time.sleep(0.01)
    first.revoke("phone")
    signed = first.shelter.signed_revocations()
    with pytest.raises(PermissionError):
        second.shelter.accept_revocations(signed | {"mac": "0" * 64})
    with pytest.raises(PermissionError):
        second.shelter.accept_revocations({"revoked": [{"name": "phone", "time": 1e12}], "mac": signed["mac"]})
    assert second.who(key) == "phone"
    assert second.shelter.accept_revocations(signed) == 1
    assert second.who(key) is None
    time.sleep(0.01)
    again = first.add("phone")  # issued after the revocation: in force again, everywhere
    assert second.who(again) == "phone" and second.who(key) is None
    # a device that joined elsewhere can be revoked by name here
    elsewhere = second.add("tablet")
    first.revoke("tablet")
    second.shelter.accept_revocations(first.shelter.signed_revocations())
    assert second.who(elsewhere) is None
    assert oct((tmp_path / "a" / "shelter.json").stat().st_mode & 0o777) == "0o600"


def test_joined_names_do_not_collide_across_a_shelter(tmp_path):
    keys = DeviceKeys(tmp_path / "devices.json")
    assert keys.unused_name() == "device-1"
    keys.shelter.init()
    names = {keys.unused_name() for _ in range(5)}
    assert len(names) == 5 and all(name.startswith("device-") and len(name) == 13 for name in names)
