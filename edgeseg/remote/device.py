"""A remote device: its ``ssh://user@host[:port]`` address and how to reach it (key, Python, tags)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 22
DEFAULT_PYTHON = "python3"
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
CONNECT_TIMEOUT_S = 20.0
# user@host[:port] with a DNS name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(
    r"^ssh://(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]{0,63})@"
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9][A-Za-z0-9.-]{0,252}))"
    r"(?::(?P<port>[0-9]{1,5}))?/?$"
)


class RemoteError(RuntimeError):
    """A remote benchmark could not run: the message says on which device, what failed and what to do."""


class ConnectionFailed(RemoteError):
    """The SSH connection could not be made or was lost; later jobs on the same device cannot run either."""


@dataclass(frozen=True)
class DeviceAddress:
    """Where a device listens: ``ssh://user@host[:port]``."""

    user: str
    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> DeviceAddress:
        """Parse ``ssh://user@host[:port]``; ValueError naming the expected form otherwise."""
        match = _ADDRESS.match(text.strip())
        port = int(match["port"]) if match and match["port"] else DEFAULT_PORT
        if match is None or not 1 <= port <= 65535:
            raise ValueError(f"device address {text!r} is not of the form ssh://user@host[:port] (port 1-65535)")
        return cls(match["user"], match["ipv6"] or match["host"], port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"


@dataclass(frozen=True)
class Device:
    """A device to benchmark on: a name for tables, its address, an optional private key, its Python, tags."""

    name: str
    address: DeviceAddress
    key: Path | None = None  # None: keys held by ssh-agent, then ~/.ssh/id_* (as ssh does)
    python: str = DEFAULT_PYTHON
    tags: tuple[str, ...] = field(default=())
