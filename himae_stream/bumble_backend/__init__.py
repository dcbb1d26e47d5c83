"""A bleak backend on bumble: bleak's API over bumble's host stack and virtual controllers.

No Bluetooth hardware is needed: pass `backend=BumbleScanner` / `backend=BumbleClient`
to `bleak.BleakScanner` / `bleak.BleakClient`. The controller is either a virtual
one on a shared `bumble.link.LocalLink` (same process) or one served over an HCI
transport (e.g. `tcp-client:127.0.0.1:PORT`, by `himae sim --transport ble`),
set with `set_default_adapter(...)`, the `bumble=` keyword, or $HIMAE_BUMBLE_HCI.
"""

from bumble.link import LocalLink

from himae_stream.bumble_backend.adapter import HCI_ENV, BumbleAdapter, default_adapter, set_default_adapter
from himae_stream.bumble_backend.client import MAX_MTU, BumbleClient
from himae_stream.bumble_backend.scanner import BumbleScanner


class BumbleBackend:
    """The scanner and client backend classes as one value, for code that takes a backend
    pair (`BleSource(backend=BumbleBackend)`); `bound(...)` ties a pair to one adapter."""

    scanner: type[BumbleScanner] = BumbleScanner
    client: type[BumbleClient] = BumbleClient

    @classmethod
    def bound(cls, adapter: BumbleAdapter | LocalLink | str) -> "BumbleBackend":
        """A pair whose scanner and client use `adapter` (or a link / HCI spec) when given none."""
        if not isinstance(adapter, BumbleAdapter):
            adapter = BumbleAdapter(adapter)
        backend = cls()
        backend.scanner = type("BumbleScanner", (BumbleScanner,), {"adapter": adapter})
        backend.client = type("BumbleClient", (BumbleClient,), {"adapter": adapter})
        return backend


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
