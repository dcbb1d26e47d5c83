"""Firmware simulator: replays real recordings as a wearable would send them.

A `DeviceModel` turns a recording into the sample stream a device produces
(its clock, drift, jitter and ADC quantisation); `Faults` decides what the
link loses, repeats, reorders or corrupts; `SerialDevice` writes COBS frames
to a pseudo-terminal and `BleDevice` serves the custom GATT service and the
Heart Rate Service on a bumble controller. Every sample the device produced
but did not deliver is recorded in its `DropLog`.
"""

from firmware_sim.device import DeviceConfig, DeviceModel, DropLog, Pacer
from firmware_sim.faults import FaultConfig, Faults

__all__ = ["DeviceConfig", "DeviceModel", "DropLog", "FaultConfig", "Faults", "Pacer"]
