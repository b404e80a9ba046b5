"""Where a served appliance may listen (appliance.serve.network)."""

from __future__ import annotations

import pytest

from appliance.errors import UsageError
from appliance.serve import network


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.0.9", "172.31.255.1", "192.168.4.1", "169.254.10.10",
                                     "fd12:3456::1", "fe80::1%eth0"])
def test_private_addresses(address):
    assert network.is_private(address)
    assert network.choose_address(False, address) == address


@pytest.mark.parametrize("address", ["8.8.8.8", "172.32.0.1", "100.64.0.1", "2001:4860::8888", "1.1.1.1"])
def test_a_public_address_is_refused_with_a_line(address):
    assert not network.is_private(address)
    with pytest.raises(UsageError, match="public address"):
        network.choose_address(False, address)


def test_loopback_by_default_and_bind_errors_are_lines():
    assert network.choose_address(False, None) == "127.0.0.1"
    with pytest.raises(UsageError, match="not an IP address"):
        network.choose_address(False, "my-laptop")
    first = network.bind("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(UsageError, match="port is in use"):
            network.bind("127.0.0.1", port)
    finally:
        first.close()


def test_interfaces_include_loopback():
    assert any(i.address == "127.0.0.1" for i in network.interfaces())
