"""edgeseg on devices the user owns, over SSH: ``bench`` on one device (``--device ssh://...``) or a fleet
(``--devices devices.toml``), ``eval`` and ``predict`` on one device.

Torch-free. The host copies each bundle to the device once (content-addressed by its manifest's sha256), checks that
the device has a torch-free edgeseg with the bundle's backend, and runs there the same code as a local run, in
fresh processes. Needs ``pip install 'edgeseg[remote]'`` (asyncssh) on the host only.
"""

from __future__ import annotations

from edgeseg.remote.device import Device, DeviceAddress, RemoteError

__all__ = ["Device", "DeviceAddress", "RemoteError"]
