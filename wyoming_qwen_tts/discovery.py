"""Zeroconf (mDNS): announce the server as _wyoming._tcp.local. so Home Assistant discovers it.

The announced address is one other machines can connect to: the chosen one (--zeroconf-host),
else the address the server is bound to, else (bound to 0.0.0.0) this machine's LAN address.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
DEFAULT_NAME = "qwen-tts"
MDNS_GROUP = "224.0.0.251"
ANY_ADDRESS = {"", "0.0.0.0", "::"}


class DiscoveryError(RuntimeError):
    pass


def check_instance_name(name: str) -> str:
    if not name or len(name.encode("utf-8")) > 63 or "." in name:
        raise DiscoveryError(f"zeroconf name {name!r}: use 1 to 63 bytes without dots")
    return name


def local_ipv4_addresses() -> list[str]:
    import ifaddr

    return [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)]


def lan_address() -> str:
    """The IPv4 address this machine uses towards the LAN (never 0.0.0.0 or loopback)."""
    try:
        # No packet is sent: connecting a UDP socket only picks the route (and so the source address).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((MDNS_GROUP, 5353))
            address = probe.getsockname()[0]
        if _usable(address):
            return address
    except OSError:
        pass
    for address in local_ipv4_addresses():
        if _usable(address):
            return address
    raise DiscoveryError("cannot find this machine's LAN address to announce; give it with --zeroconf-host")


def _usable(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_unspecified or ip.is_loopback or ip.is_link_local)


def advertised_address(bind_host: str, chosen: str | None = None) -> str:
    """The IPv4 address to announce for a server bound to bind_host."""
    if chosen:
        return _ipv4(chosen, "--zeroconf-host")
    if bind_host in ANY_ADDRESS:
        return lan_address()
    return _ipv4(bind_host, "the --uri host")


def _ipv4(host: str, what: str) -> str:
    try:
        address = socket.gethostbyname(host)
    except OSError as err:
        raise DiscoveryError(f"{what} {host!r} does not resolve to an IPv4 address: {err}") from None
    if ipaddress.ip_address(address).is_unspecified:
        raise DiscoveryError(f"{what} {host!r} cannot be announced; give the LAN address with --zeroconf-host")
    return address


class Announcement:
    """A registered _wyoming._tcp service; stop() unregisters it (goodbye packets) and closes zeroconf."""

    def __init__(self, name: str, address: str, port: int) -> None:
        self.name = check_instance_name(name)
        self.address = address
        self.port = port
        self._zeroconf = None
        self._info = None

    async def start(self) -> None:
        from zeroconf import InterfaceChoice, IPVersion
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        # Announce on the interface holding the address when it is ours; else on all of them.
        interfaces = [self.address] if self.address in local_ipv4_addresses() else InterfaceChoice.All
        self._zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        self._info = AsyncServiceInfo(SERVICE_TYPE, f"{self.name}.{SERVICE_TYPE}",
                                      addresses=[socket.inet_aton(self.address)], port=self.port)
        registered = await self._zeroconf.async_register_service(self._info, allow_name_change=True)
        await registered
        _LOGGER.info("Zeroconf: announced %s at %s:%d", self._info.name, self.address, self.port)

    async def stop(self) -> None:
        if self._zeroconf is None:
            return
        zeroconf, self._zeroconf = self._zeroconf, None
        try:
            unregistered = await zeroconf.async_unregister_service(self._info)
            await unregistered
            _LOGGER.info("Zeroconf: unregistered %s", self._info.name)
        finally:
            await zeroconf.async_close()
