"""A real SSH server on 127.0.0.1 (asyncssh) whose commands run on this machine with a temporary home: a "device".

The server runs in a thread of its own with its own event loop, so tests can run clients with ``asyncio.run``.
Commands run as ``bash -c COMMAND`` in a subprocess whose HOME is the device's home and whose PATH starts with
the device's ``bin`` folder; SFTP is confined to that home, so relative paths resolve from it as with OpenSSH.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncssh


@dataclass(frozen=True)
class ServerKeys:
    """The server's host key and the file of client keys it accepts."""

    host_key: asyncssh.SSHKey
    authorized_keys: Path


class LoopbackSSH:
    """Starts SSH servers on 127.0.0.1 in a background event loop; ``close`` stops them all."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="loopback-ssh", daemon=True)
        self._thread.start()
        self._servers: list[asyncssh.SSHAcceptor] = []

    def start(self, keys: ServerKeys, home: Path, env: Mapping[str, str], drop_on: str | None = None) -> int:
        """Start a server for the device ``home``; return its port.

        With ``drop_on``, a command containing that text is started, then after a second the subprocess is
        killed and the connection aborted (a device that drops off the network mid-run).
        """
        future = asyncio.run_coroutine_threadsafe(self._start(keys, home, dict(env), drop_on), self.loop)
        return future.result(timeout=30)

    async def _start(self, keys: ServerKeys, home: Path, env: dict[str, str], drop_on: str | None) -> int:
        async def handle(process: asyncssh.SSHServerProcess) -> None:
            command = str(process.command or "")
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, cwd=home,
            )  # fmt: skip
            if drop_on is not None and drop_on in command:
                await asyncio.sleep(1.0)
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                process.get_extra_info("connection").abort()
                return
            stdout, stderr = await proc.communicate()
            process.stdout.write(stdout)
            process.stderr.write(stderr)
            process.exit(proc.returncode if proc.returncode is not None else 255)

        def sftp(channel: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
            return asyncssh.SFTPServer(channel, chroot=str(home).encode())

        server = await asyncssh.create_server(
            asyncssh.SSHServer,
            "127.0.0.1",
            0,
            server_host_keys=[keys.host_key],
            authorized_client_keys=str(keys.authorized_keys),
            process_factory=handle,
            sftp_factory=sftp,
            encoding=None,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()
