"""Content-addressed copies on a device: a folder named by a digest appears whole or not at all.

Files go into a hidden staging folder beside the target and are renamed into place only when all of them are
there, so a dropped connection never leaves a folder that counts as present. Staging folders that a lost
connection left behind are removed once they are an hour old (by the device's clock).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

import asyncssh

from edgeseg.remote.connection import connection_error
from edgeseg.remote.device import Device, RemoteError

CACHE = ".cache/edgeseg"  # relative to the device user's home, where SFTP starts
BUNDLE_CACHE = f"{CACHE}/bundles"
WHEEL_CACHE = f"{CACHE}/wheels"
DATASET_CACHE = f"{CACHE}/datasets"
PARTIAL = ".partial-"
STALE_PARTIAL_S = 3600


async def _remove_stale_partials(sftp: asyncssh.SFTPClient, root: str, now: float) -> None:
    """Remove staging folders under ``root`` last changed more than an hour before ``now``."""
    for entry in await sftp.readdir(root):
        name = str(entry.filename)
        mtime = entry.attrs.mtime
        if name.startswith(".") and PARTIAL in name and mtime is not None and now - mtime > STALE_PARTIAL_S:
            await sftp.rmtree(f"{root}/{name}", ignore_errors=True)


async def put_folder(
    connection: asyncssh.SSHClientConnection, device: Device, root: str, digest: str, files: Mapping[str, Path]
) -> tuple[str, bool]:
    """Make ``root/digest`` hold ``files`` (name → local path) unless it exists; return it and whether it was copied.

    ``root`` is relative to the device user's home folder; a name may hold ``/`` (files in sub-folders).
    """
    final = f"{root}/{digest}"
    try:
        async with connection.start_sftp_client() as sftp:
            await sftp.makedirs(root, exist_ok=True)
            if await sftp.isdir(final):
                return final, False
            staging = f"{root}/.{digest}{PARTIAL}{secrets.token_hex(4)}"
            await sftp.mkdir(staging)
            try:
                for folder in sorted({name.rpartition("/")[0] for name in files} - {""}):
                    await sftp.makedirs(f"{staging}/{folder}", exist_ok=True)
                for name, local in files.items():
                    await sftp.put(str(local), f"{staging}/{name}", follow_symlinks=True)
                if await sftp.isdir(final):  # another host copied the same content meanwhile
                    return final, False
                await sftp.rename(staging, final)
            finally:
                if await sftp.exists(staging):
                    await sftp.rmtree(staging, ignore_errors=True)
            now = (await sftp.stat(final)).mtime
            if now is not None:
                await _remove_stale_partials(sftp, root, now)
            return final, True
    except (asyncssh.SFTPConnectionLost, asyncssh.ConnectionLost, asyncssh.DisconnectError) as error:
        raise connection_error(device, error) from None
    except (asyncssh.SFTPError, asyncssh.ChannelOpenError) as error:
        raise RemoteError(
            f"device {device.name}: copying to ~/{final} failed: {error.reason}; check the space and permissions "
            "of ~/.cache on the device (is the SFTP subsystem enabled in its sshd?)"
        ) from None
