"""Zeroconf: which address is announced, and registration seen (then removed) by a browser on loopback."""

import asyncio
import ipaddress
import threading

import pytest
from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

from wyoming_qwen_tts.discovery import (
    SERVICE_TYPE,
    Announcement,
    DiscoveryError,
    advertised_address,
    check_instance_name,
    lan_address,
)


def test_a_server_bound_to_every_address_announces_a_real_one():
    try:
        address = lan_address()
    except DiscoveryError:
        pytest.skip("this machine has no LAN address")
    ip = ipaddress.ip_address(address)
    assert ip.version == 4 and not ip.is_unspecified and not ip.is_loopback
    assert advertised_address("0.0.0.0") == address


def test_chosen_or_bound_addresses_are_announced_as_given():
    assert advertised_address("0.0.0.0", chosen="127.0.0.1") == "127.0.0.1"
    assert advertised_address("127.0.0.1") == "127.0.0.1"
    assert advertised_address("localhost") == "127.0.0.1"
    with pytest.raises(DiscoveryError, match="cannot be announced"):
        advertised_address("0.0.0.0", chosen="0.0.0.0")


@pytest.mark.parametrize("name", ["", "a.b", "x" * 64])
def test_instance_names_must_fit_mdns(name):
    with pytest.raises(DiscoveryError):
        check_instance_name(name)


class Browser:
    """A zeroconf browser bound to loopback only, recording what it sees."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, ServiceStateChange]] = []
        self.changed = threading.Condition()
        self.zeroconf = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        self.browser = ServiceBrowser(self.zeroconf, SERVICE_TYPE, handlers=[self._record])

    def _record(self, zeroconf, service_type, name, state_change) -> None:
        with self.changed:
            self.changes.append((name, state_change))
            self.changed.notify_all()

    def wait_for(self, name: str, change: ServiceStateChange, timeout: float = 20.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: (name, change) in self.changes, timeout)

    def close(self) -> None:
        self.browser.cancel()
        self.zeroconf.close()


def test_announcement_is_seen_on_loopback_and_removed_when_stopped():
    browser = Browser()
    announcement = Announcement("qwen-tts-discovery-test", "127.0.0.1", 10299)
    name = f"qwen-tts-discovery-test.{SERVICE_TYPE}"

    async def announce_then_stop():
        await announcement.start()
        added = await asyncio.to_thread(browser.wait_for, name, ServiceStateChange.Added)
        info = await asyncio.to_thread(browser.zeroconf.get_service_info, SERVICE_TYPE, name, 5000)
        await announcement.stop()
        removed = await asyncio.to_thread(browser.wait_for, name, ServiceStateChange.Removed)
        return added, info, removed

    try:
        added, info, removed = asyncio.run(announce_then_stop())
    finally:
        browser.close()
    assert added, browser.changes
    assert info is not None and info.port == 10299 and info.parsed_addresses() == ["127.0.0.1"]
    assert removed, browser.changes
