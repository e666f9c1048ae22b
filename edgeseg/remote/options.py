"""The options of ``edgeseg bench`` and ``eval`` for remote devices (parsed without importing asyncssh)."""

from __future__ import annotations

import argparse

from edgeseg.remote.device import CONNECT_TIMEOUT_S, DEFAULT_KNOWN_HOSTS, DEFAULT_PYTHON, DeviceAddress


def _address(text: str) -> str:
    try:
        DeviceAddress.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 3600 seconds")
    return value


def add_remote_arguments(parser: argparse.ArgumentParser, *, fleet: bool) -> None:
    """Add --device (and with ``fleet`` --devices) and how to reach devices to ``parser`` (``bench --plot`` draws a
    fleet's latency per bundle × device)."""
    group = parser.add_argument_group("remote devices (needs pip install 'edgeseg[remote]'; only loopback is tested)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--device", type=_address, metavar="ssh://USER@HOST[:PORT]", help="run on this device")
    if fleet:
        where.add_argument(
            "--devices", metavar="DEVICES.TOML", help="run on every device listed (name, address, key, python, tags)"
        )
    group.add_argument("--key", help="--device: private key (default: ssh-agent, then ~/.ssh/id_*)")
    group.add_argument("--python", default=DEFAULT_PYTHON, help="--device: the device's Python (default: python3)")
    group.add_argument(
        "--known-hosts", default=str(DEFAULT_KNOWN_HOSTS), help="host keys to trust (default: ~/.ssh/known_hosts)"
    )
    group.add_argument("--connect-timeout", type=_seconds, default=CONNECT_TIMEOUT_S, help="seconds (default: 20)")
    group.add_argument(
        "--install-wheel",
        action="store_true",
        help="build a wheel of this checkout and install it with the backend into ~/.cache/edgeseg/venv on the device",
    )


def runs_remotely(args: argparse.Namespace) -> bool:
    """Whether the command runs on a device (--device or --devices); ValueError for device options without one."""
    if args.device or getattr(args, "devices", None):
        return True
    given = [
        option
        for option, used in (
            ("--key", args.key is not None),
            ("--python", args.python != DEFAULT_PYTHON),
            ("--known-hosts", args.known_hosts != str(DEFAULT_KNOWN_HOSTS)),
            ("--connect-timeout", args.connect_timeout != CONNECT_TIMEOUT_S),
            ("--install-wheel", args.install_wheel),
        )
        if used
    ]
    if given:
        raise ValueError(f"{', '.join(given)} only apply to remote runs: add --device")
    return False
