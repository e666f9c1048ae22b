"""Energy counters of the machine, read from sysfs: Linux powercap (Intel/AMD RAPL) and Jetson INA3221 monitors.

Every meter reports joules used since it started; callers take differences. Both measure the whole package or
board, not one process: other load on the machine is counted too. :func:`open_energy_meter` takes the sysfs
root as a parameter (tests point it at a folder of fake counter files) and returns a meter, or None and the
reason no counter could be read.

* RAPL: ``class/powercap/intel-rapl:N/energy_uj`` (a cumulative µJ counter per CPU package; sub-zones
  ``intel-rapl:N:M`` are parts of the package and are not added again). It wraps around at
  ``max_energy_range_uj``; a reading smaller than the previous one counts as one wrap, so read it at least
  once per wrap period (minutes at full load).
* INA3221 (Jetson): instantaneous power rails under ``bus/i2c/drivers/ina3221*/*/hwmon/hwmon*`` (``inN_input``
  mV × ``currN_input`` mA, ``inN_label`` names the rail), sampled by a background thread and integrated
  (trapezoids). The rail labelled ``VDD_IN`` (board input) is used when present, else the sum of the rails.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from edgeseg.closing import Closeable

SYSFS = Path("/sys")
RAPL_PACKAGE = re.compile(r"intel-rapl:\d+")
INA_SAMPLE_S = 0.05
BOARD_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


class EnergyMeter(Closeable, ABC):
    """Joules used since the meter started, by a named source."""

    source: str

    @abstractmethod
    def joules(self) -> float:
        """Energy since the meter started, in joules."""

    def close(self) -> None:
        """Stop sampling (a counter read on demand holds nothing)."""


def _read_int(path: Path) -> int:
    """An integer sysfs attribute."""
    return int(path.read_text().strip())


@dataclass
class _RaplZone:
    """One package's counter: its files, wrap range and the last reading."""

    energy_file: Path
    max_range_uj: int
    last_uj: int
    total_uj: int = 0

    def update(self) -> int:
        """Read the counter, add the increase (one wrap-around when it went down); µJ since the start."""
        now = _read_int(self.energy_file)
        delta = now - self.last_uj
        if delta < 0:
            delta += self.max_range_uj
        self.total_uj += delta
        self.last_uj = now
        return self.total_uj


class RaplMeter(EnergyMeter):
    """Sum of the package-level powercap energy counters (RAPL)."""

    def __init__(self, zones: list[Path]) -> None:
        self._zones = [
            _RaplZone(z / "energy_uj", _read_int(z / "max_energy_range_uj"), _read_int(z / "energy_uj")) for z in zones
        ]
        names = [(z / "name").read_text().strip() if (z / "name").is_file() else z.name for z in zones]
        self.source = f"powercap RAPL ({', '.join(f'{z.name}: {n}' for z, n in zip(zones, names))})"

    def joules(self) -> float:
        """Joules since the start, all packages together."""
        return sum(zone.update() for zone in self._zones) / 1e6


@dataclass(frozen=True)
class _Rail:
    """One INA3221 channel: its voltage (mV) and current (mA) files."""

    label: str
    voltage_file: Path
    current_file: Path

    def watts(self) -> float:
        """Instantaneous power in watts."""
        return _read_int(self.voltage_file) * _read_int(self.current_file) / 1e6


class Ina3221Meter(EnergyMeter):
    """Board power from INA3221 rails, sampled every ``interval`` seconds and integrated."""

    def __init__(self, rails: list[_Rail], interval: float = INA_SAMPLE_S) -> None:
        board = [r for r in rails if r.label in BOARD_INPUT_RAILS]
        self._rails = board[:1] or rails
        self.source = f"INA3221 {'+'.join(r.label for r in self._rails)}"
        self._interval = interval
        self._lock = threading.Lock()
        self._total = 0.0
        self._last = (time.perf_counter(), self._watts())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, daemon=True)
        self._thread.start()

    def _watts(self) -> float:
        return sum(r.watts() for r in self._rails)

    def _sample(self) -> float:
        """Add the trapezoid since the last sample; joules so far."""
        now, watts = time.perf_counter(), self._watts()
        with self._lock:
            then, before = self._last
            self._total += (watts + before) / 2 * (now - then)
            self._last = (now, watts)
            return self._total

    def _sample_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def joules(self) -> float:
        """Joules since the start (sampled now)."""
        return self._sample()

    def close(self) -> None:
        """Stop the sampling thread."""
        self._stop.set()
        self._thread.join()


def _rapl_zones(root: Path) -> list[Path]:
    """Package-level powercap zones whose counters are readable."""
    base = root / "class" / "powercap"
    zones = sorted(p for p in base.glob("intel-rapl:*") if RAPL_PACKAGE.fullmatch(p.name))
    readable = []
    for zone in zones:
        try:
            _read_int(zone / "energy_uj")
            _read_int(zone / "max_energy_range_uj")
        except (OSError, ValueError):
            continue
        readable.append(zone)
    return readable


def _ina_rails(root: Path) -> list[_Rail]:
    """Readable INA3221 channels (voltage and current) under ``root``'s i2c drivers."""
    rails = []
    for hwmon in sorted((root / "bus" / "i2c" / "drivers").glob("ina3221*/*/hwmon/hwmon*")):
        for voltage in sorted(hwmon.glob("in[0-9]*_input")):
            channel = voltage.name[2:].split("_")[0]
            current = hwmon / f"curr{channel}_input"
            label_file = hwmon / f"in{channel}_label"
            label = label_file.read_text().strip() if label_file.is_file() else f"{hwmon.name}/in{channel}"
            try:
                _Rail(label, voltage, current).watts()
            except (OSError, ValueError):
                continue
            rails.append(_Rail(label, voltage, current))
    return rails


def open_energy_meter(root: Path = SYSFS) -> tuple[EnergyMeter | None, str]:
    """A started meter on the first readable source under ``root`` and its name, or None and why there is none."""
    zones = _rapl_zones(root)
    if zones:
        rapl = RaplMeter(zones)
        return rapl, rapl.source
    rails = _ina_rails(root)
    if rails:
        ina = Ina3221Meter(rails)
        return ina, ina.source
    return None, (
        f"no readable powercap energy counter ({root / 'class/powercap/intel-rapl:N/energy_uj'}) and no INA3221 "
        f"power monitor ({root / 'bus/i2c/drivers/ina3221*'}) on this machine (a VM or container usually hides "
        "them; RAPL counters may also need root)"
    )
