"""Transports behind one interface (`Source`): serial, BLE, heart rate, Polar PMD, file.

Submodules are imported on first use so that naming a source stays cheap
(bleak and pyserial load only when a source of theirs is made).
"""

from importlib import import_module

_WHERE = {
    "Source": "base", "SourceError": "base", "SerialSource": "serial", "BleSource": "ble",
    "HeartRateSource": "heartrate", "PolarSource": "polar", "HeartRateReading": "heartrate", "FileSource": "file",
    "write_log": "file",
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
