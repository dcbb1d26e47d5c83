"""A bleak backend on bumble: bleak's API over bumble's host stack and virtual controllers.

No Bluetooth hardware is needed: pass `backend=BumbleScanner` / `backend=BumbleClient`
to `bleak.BleakScanner` / `bleak.BleakClient`. The controller is either a virtual
one on a shared `bumble.link.LocalLink` (same process) or one served over an HCI
transport (e.g. `tcp-client:127.0.0.1:PORT`, by `himae sim --transport ble`),
set with `set_default_adapter(...)`, the `bumble=` keyword, or $HIMAE_BUMBLE_HCI.
"""

from himae_stream.bumble_backend.adapter import HCI_ENV, BumbleAdapter, default_adapter, set_default_adapter
from himae_stream.bumble_backend.client import MAX_MTU, BumbleClient
from himae_stream.bumble_backend.scanner import BumbleScanner


class BumbleBackend:
    """The scanner and client backend classes as one value, for code that takes a backend pair."""

    scanner = BumbleScanner
    client = BumbleClient


__all__ = [
    "HCI_ENV",
    "MAX_MTU",
    "BumbleAdapter",
    "BumbleBackend",
    "BumbleClient",
    "BumbleScanner",
    "default_adapter",
    "set_default_adapter",
]
