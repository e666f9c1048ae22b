"""SSH connections to a device with asyncssh: known-hosts checking on, key or agent auth, errors that say what to do."""

from __future__ import annotations

import shlex
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh

from edgeseg.remote.device import CONNECT_TIMEOUT_S, DEFAULT_KNOWN_HOSTS, ConnectionFailed, Device, RemoteError

# A device that vanishes without closing the connection (power, network) is noticed after about a minute.
KEEPALIVE_INTERVAL_S = 15.0
KEEPALIVE_COUNT_MAX = 4
# Exit status of a shell whose command was not found.
COMMAND_NOT_FOUND = 127


class CommandFailed(RemoteError):
    """A command on the device ended with a non-zero exit status (kept in ``exit_status``)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def home_path(path: str) -> str:
    """``path`` as one word of a POSIX shell command on the device, with a leading ``~/`` meaning its home folder."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _keyscan_advice(device: Device, known_hosts: Path) -> str:
    port = "" if device.address.port == 22 else f"-p {device.address.port} "
    return (
        f"if you trust this device, add its host key: ssh-keyscan {port}{device.address.host} >> {known_hosts} "
        f"(compare its fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` run on the device), "
        "or pass --known-hosts with a file that lists it"
    )


def connection_error(device: Device, error: BaseException, known_hosts: Path = DEFAULT_KNOWN_HOSTS) -> ConnectionFailed:
    """The error to report for a failed or lost connection to ``device`` (host keys checked against ``known_hosts``)."""
    where = f"device {device.name} ({device.address})"
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        advice = _keyscan_advice(device, known_hosts)
        return ConnectionFailed(f"{where}: its host key is not trusted by {known_hosts} ({error.reason}); {advice}")
    if isinstance(error, asyncssh.PermissionDenied):
        key = f"the key {device.key}" if device.key else "the keys of ssh-agent and ~/.ssh/id_*"
        return ConnectionFailed(
            f"{where} refused {key} for user {device.address.user}: add the public key to the device's "
            "~/.ssh/authorized_keys, or give the right private key (--key, or key in devices.toml)"
        )
    if isinstance(error, (asyncssh.KeyImportError, asyncssh.KeyEncryptionError)):
        return ConnectionFailed(
            f"{where}: the private key {device.key} cannot be read ({error}); for a key with a passphrase, add it "
            "to ssh-agent (ssh-add) and leave the key out"
        )
    if isinstance(error, ConnectionRefusedError):
        return ConnectionFailed(f"{where} refused the connection: is sshd running there, and listening on that port?")
    if isinstance(error, (TimeoutError, asyncssh.TimeoutError)):
        return ConnectionFailed(f"{where} did not answer in time: is it on and reachable from this machine?")
    if isinstance(error, socket.gaierror):
        return ConnectionFailed(f"{where}: host name {device.address.host} cannot be resolved ({error.strerror})")
    if isinstance(error, (asyncssh.ConnectionLost, asyncssh.DisconnectError)):
        return ConnectionFailed(f"{where}: the SSH connection was lost ({error.reason}); nothing was recorded")
    return ConnectionFailed(f"{where}: SSH connection failed: {type(error).__name__}: {error}")


@asynccontextmanager
async def connect(
    device: Device, known_hosts: Path, timeout: float = CONNECT_TIMEOUT_S
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An open SSH connection to ``device``, its host key checked against ``known_hosts``; ConnectionFailed if not."""
    known_hosts = known_hosts.expanduser()
    if not known_hosts.is_file():
        raise ConnectionFailed(
            f"device {device.name} ({device.address}): the known-hosts file {known_hosts} does not exist, so its "
            f"host key cannot be checked; {_keyscan_advice(device, known_hosts)}"
        )
    if device.key is not None and not device.key.expanduser().is_file():
        raise ConnectionFailed(f"device {device.name}: private key {device.key} does not exist")
    options = {"client_keys": [str(device.key.expanduser())]} if device.key is not None else {}
    try:
        connection = await asyncssh.connect(
            device.address.host,
            device.address.port,
            username=device.address.user,
            known_hosts=str(known_hosts),
            connect_timeout=timeout,
            keepalive_interval=KEEPALIVE_INTERVAL_S,
            keepalive_count_max=KEEPALIVE_COUNT_MAX,
            **options,
        )
    except (OSError, asyncssh.Error, asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as error:
        raise connection_error(device, error, known_hosts) from None
    async with connection:
        yield connection


async def run(connection: asyncssh.SSHClientConnection, device: Device, command: str, what: str) -> str:
    """Run ``command`` in the device's shell and return its stdout; CommandFailed with its stderr if it fails.

    ``what`` names the step in messages. A connection lost meanwhile raises ConnectionFailed.
    """
    try:
        result = await connection.run(command, check=False)
    except (OSError, asyncssh.Error) as error:
        raise connection_error(device, error) from None
    stdout = str(result.stdout or "")
    stderr = str(result.stderr or "").strip()
    if result.exit_signal:
        raise RemoteError(
            f"device {device.name}: {what} was killed by signal {result.exit_signal[0]} (out of memory?); "
            f"nothing was recorded\n--- device stderr ---\n{stderr}"
        )
    if result.exit_status is None:
        raise ConnectionFailed(
            f"device {device.name}: {what} did not finish (the SSH connection was lost); nothing was recorded"
        )
    if result.exit_status != 0:
        last = stderr.splitlines()[-1] if stderr else "(no stderr)"
        raise CommandFailed(
            f"device {device.name}: {what} failed (exit status {result.exit_status}): {last}\n"
            f"--- device stderr ---\n{stderr}",
            result.exit_status,
        )
    return stdout
