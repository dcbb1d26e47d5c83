"""`himae sim`: replay a recording as a serial or BLE wearable and say where to connect."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from firmware_sim.faults import FaultConfig
from firmware_sim.options import NUMBERS, SimOptions
from himae_stream.numbers import NON_NEGATIVE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recording", required=True, help="WFDB, TROIKA .mat, CSV or NPY recording")
    parser.add_argument("--channels", help="channel names or globs, comma-separated (e.g. PLETH)")
    parser.add_argument("--fs", type=NUMBERS["fs"], help="device sample rate (Hz); default the recording's")
    parser.add_argument("--duration", type=NUMBERS["duration"], help="replay only the first seconds")
    parser.add_argument("--loop", action="store_true", help="start over at the end of the recording")
    parser.add_argument("--transport", choices=("serial", "ble"), default="serial")
    parser.add_argument("--device", choices=("polar-verity", "polar-h10"),
                        help="emulate a Polar sensor (PMD service over BLE) instead of the sample service")
    parser.add_argument("--speed", type=NUMBERS["speed"], default=1.0, help="replay speed factor, or 'max' (default 1)")
    parser.add_argument("--format", default="int16", choices=("int16", "int24", "float32"), help="ADC sample format")
    parser.add_argument("--drift-ppm", type=NUMBERS["drift_ppm"], default=0.0, help="device clock error (ppm)")
    parser.add_argument("--jitter-us", type=NUMBERS["jitter_us"], default=0.0,
                        help="sampling jitter, standard deviation (µs)")
    faults = parser.add_argument_group("faults (seeded)")
    faults.add_argument("--loss", type=NUMBERS["loss"], default=0.0, help="probability a frame/notification is lost")
    faults.add_argument("--burst", type=NUMBERS["burst"], default=0.0, help="probability a loss burst starts")
    faults.add_argument("--burst-len", type=NUMBERS["burst_len"], default=5.0, help="mean frames per loss burst")
    faults.add_argument("--duplicate", type=NUMBERS["duplicate"], default=0.0,
                        help="probability a frame is sent twice (serial)")
    faults.add_argument("--reorder", type=NUMBERS["reorder"], default=0.0,
                        help="probability a frame swaps with the next (serial)")
    faults.add_argument("--corrupt", type=NUMBERS["corrupt"], default=0.0,
                        help="probability a frame has a byte changed (serial)")
    faults.add_argument("--disconnect-after", type=NUMBERS["disconnect_after"],
                        help="device seconds before the link drops")
    faults.add_argument("--disconnect-for", type=NUMBERS["disconnect_for"], default=5.0,
                        help="device seconds the link stays down")
    faults.add_argument("--seed", type=NUMBERS["seed"], default=1)
    serial = parser.add_argument_group("serial")
    serial.add_argument("--baud", type=NUMBERS["baud"], default=921_600)
    serial.add_argument("--frame-ms", type=NUMBERS["frame_ms"], default=40.0, help="samples per frame, in ms")
    ble = parser.add_argument_group("BLE")
    ble.add_argument("--name", default="himae-sim", help="advertised device name")
    ble.add_argument("--mtu", type=NUMBERS["mtu"], default=247, help="largest ATT MTU the device accepts (23 … 517)")
    ble.add_argument("--interval-ms", type=NUMBERS["interval_ms"], default=15.0, help="connection interval (ms)")
    ble.add_argument("--hci", default="127.0.0.1:0", help="HOST:PORT to serve the virtual radio's HCI on")
    ble.add_argument("--hr-trace", help="BPM trace file for the Heart Rate Service (default: from the recording)")
    parser.add_argument("--log", help="write the drop log (JSON) here when the replay ends")
    parser.add_argument("--linger", type=NON_NEGATIVE, default=2.0, help="seconds to stay up after the last sample")


def options_from_args(args: argparse.Namespace) -> SimOptions:
    return SimOptions(
        recording=args.recording,
        channels=args.channels,
        fs=args.fs,
        duration=args.duration,
        loop=args.loop,
        speed=args.speed,
        fmt=args.format,
        drift_ppm=args.drift_ppm,
        jitter_us=args.jitter_us,
        seed=args.seed,
        faults=FaultConfig(
            loss=args.loss, burst=args.burst, burst_len=args.burst_len, duplicate=args.duplicate,
            reorder=args.reorder, corrupt=args.corrupt, disconnect_after=args.disconnect_after,
            disconnect_for=args.disconnect_for, seed=args.seed,
        ),
        name=args.name,
        baud=args.baud,
        frame_ms=args.frame_ms,
        mtu=args.mtu,
        interval_ms=args.interval_ms,
        hr_trace=args.hr_trace,
    )


def announce(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if args.transport == "serial" and not args.device:
        return run_serial(options, args.log, args.linger)
    host, _, port = args.hci.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--hci must be HOST:PORT, got {args.hci!r}")
    return asyncio.run(run_ble(options, host, int(port), args.log, args.linger, args.device or "ble"))


def run_serial(options: SimOptions, log_path: str | None, linger: float) -> int:
    from firmware_sim.faults import Faults
    from firmware_sim.options import build_model, write_log
    from firmware_sim.serial_device import SerialDevice

    model = build_model(options)
    with SerialDevice(model, Faults(options.faults), options.speed, options.baud, options.frame_ms) as device:
        announce(f"serial: {device.path}")
        announce(f"source: serial://{device.path}?baud={options.baud}")
        device.start()
        try:
            device.wait()
            # what a reader must have read to have everything: it can stop waiting then
            announce(f"done: {device.produced} samples produced, {device.written} bytes written")
            time.sleep(linger)
        finally:
            if log_path:
                write_log(log_path, device.log, device.produced)
    return 0


async def run_ble(options: SimOptions, host: str, port: int, log_path: str | None, linger: float,
                  kind: str = "ble") -> int:
    from bumble.link import LocalLink

    from firmware_sim.ble_device import serve_hci
    from firmware_sim.options import build_ble_device, write_log
    from himae_stream.bumble_backend import HCI_ENV

    link = LocalLink()
    device = build_ble_device(options, link, kind)
    transport, spec = await serve_hci(link, host, port)
    await device.start()
    announce(f"ble: name={device.name} address={device.address}")
    announce(f"{HCI_ENV}={spec}")
    try:
        await device.finished.wait()
        sent = device.log.counters.get("notifications", 0)
        announce(f"done: {device.produced} samples produced, {sent} notifications sent")
        await asyncio.sleep(linger)
    finally:
        if log_path:
            write_log(log_path, device.log, device.produced, device.hr_log)
        await device.stop()
        await transport.close()
    return 0


if __name__ == "__main__":
    from himae_stream.cli import main

    sys.exit(main(["sim", *sys.argv[1:]]))
