"""bleak scanner backend on bumble: advertisements from a `BumbleAdapter` as bleak sees them."""

from __future__ import annotations

from typing import Any, Literal

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.uuids import normalize_uuid_str
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement

from himae_stream.bumble_backend.adapter import BumbleAdapter, address_string, default_adapter

_T = AdvertisingData.Type
_UUID_LISTS = {
    _T.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _T.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _T.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _T.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _T.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
    _T.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
}
_SERVICE_DATA = {_T.SERVICE_DATA_16_BIT_UUID: 2, _T.SERVICE_DATA_32_BIT_UUID: 4, _T.SERVICE_DATA_128_BIT_UUID: 16}


def uuid_str(uuid: UUID) -> str:
    """A bumble UUID in bleak's form: lower-case 128-bit with dashes."""
    return normalize_uuid_str(uuid.to_hex_str("-").lower())


def advertisement_data(advertisement: Advertisement) -> AdvertisementData:
    """Decode the AD structures of one (accumulated) advertisement into bleak's record."""
    name = None
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    uuids: list[str] = []
    tx_power = None
    for kind, value in advertisement.data.ad_structures:
        if kind in (_T.COMPLETE_LOCAL_NAME, _T.SHORTENED_LOCAL_NAME):
            if name is None or kind == _T.COMPLETE_LOCAL_NAME:
                name = value.decode("utf-8", errors="replace")
        elif kind == _T.MANUFACTURER_SPECIFIC_DATA and len(value) >= 2:
            manufacturer[int.from_bytes(value[:2], "little")] = bytes(value[2:])
        elif kind in _SERVICE_DATA and len(value) >= _SERVICE_DATA[kind]:
            size = _SERVICE_DATA[kind]
            service_data[uuid_str(UUID.from_bytes(value[:size]))] = bytes(value[size:])
        elif kind in _UUID_LISTS:
            size = _UUID_LISTS[kind]
            for i in range(0, len(value) - size + 1, size):
                uuid = uuid_str(UUID.from_bytes(value[i : i + size]))
                if uuid not in uuids:
                    uuids.append(uuid)
        elif kind == _T.TX_POWER_LEVEL and len(value) == 1:
            tx_power = int.from_bytes(value, "little", signed=True)
    return AdvertisementData(
        local_name=name,
        manufacturer_data=manufacturer,
        service_data=service_data,
        service_uuids=uuids,
        tx_power=tx_power,
        rssi=advertisement.rssi,
        platform_data=(advertisement,),
    )


class BumbleScanner(BaseBleakScanner):
    """Scans through a `BumbleAdapter`: keyword `bumble=`, else the class's `adapter`, else the default one."""

    adapter: BumbleAdapter | None = None

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        bumble: BumbleAdapter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.adapter = bumble or type(self).adapter or default_adapter()

    async def start(self) -> None:
        self.seen_devices = {}
        await self.adapter.start_scan(self._on_advertisement)

    async def stop(self) -> None:
        await self.adapter.stop_scan(self._on_advertisement)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        data = advertisement_data(advertisement)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        address = address_string(advertisement.address)
        device = self.create_or_update_device(address, address, data.local_name, advertisement.address, data)
        self.call_detection_callbacks(device, data)
