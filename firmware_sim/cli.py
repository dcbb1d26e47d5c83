"""`himae sim`: replay a recording as a serial or BLE wearable and say where to connect.

`--device` picks what kind of device: `DEVICES` maps each name to the function that runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from functools import partial

from firmware_sim.faults import FaultConfig
from firmware_sim.options import DELIMITERS as TEXT_DELIMITERS, NUMBERS, SimOptions, TextBoard
from himae_stream.commands import add_positional
from himae_stream.numbers import NON_NEGATIVE
from himae_stream.recordings import DEMO, RECORDING_KINDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_positional(parser, "--recording")
    parser.add_argument("--recording", help=f"recording to replay: {RECORDING_KINDS} (default: the "
                                            "bundled PhysioNet record, as `himae run` replays it)")
    parser.add_argument("--channels", help="channel names or globs, comma-separated (e.g. PLETH)")
    parser.add_argument("--fs", type=NUMBERS["fs"], help="device sample rate (Hz); default the recording's (a "
                        "recording that states none, a bare .npy or columns of numbers, is at this rate); "
                        "--device bitalino: the rate the announced URL asks for (1, 10, 100, default 1000); "
                        "--device shimmer: the sensor's rate until its host sets one (default 128)")
    parser.add_argument("--duration", type=NUMBERS["duration"], help="replay only the first seconds")
    parser.add_argument("--loop", action="store_true", help="start over at the end of the recording")
    parser.add_argument("--device", choices=tuple(DEVICES), default="framed",
                        help="framed: the framed protocol over --transport; text-serial: a DIY board "
                             "printing text lines on a serial port; bitalino, shimmer: a BITalino or a Shimmer3 on a "
                             "serial port, streaming once its host starts it (bitalino with --transport ble: a "
                             "BITalino (r)evolution BLE); lsl: a Lab Streaming Layer outlet; "
                             "polar-verity, polar-h10: a Polar sensor's PMD service over BLE; "
                             "brainflow-playback: a BrainFlow playback file (--out) that replays at --speed with the "
                             "faults' frames left out")
    parser.add_argument("--transport", choices=("serial", "ble"), default="serial")
    parser.add_argument("--out", help="file a --device that writes one (brainflow-playback) writes to")
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
    text = parser.add_argument_group("text-serial board")
    text.add_argument("--no-header", action="store_true", help="print no banner and header row")
    text.add_argument("--delimiter", choices=tuple(TEXT_DELIMITERS), default="comma")
    text.add_argument("--millis", action="store_true", help="print a millis() timestamp column first")
    text.add_argument("--plotter", action="store_true", help="print Arduino Serial Plotter name:value pairs")
    text.add_argument("--garbage", type=NUMBERS["garbage"], default=0.0,
                      help="probability a junk line comes before a sample's line")
    parser.add_argument("--log", help="write the drop log (JSON) here when the replay ends")
    parser.add_argument("--linger", type=NON_NEGATIVE, default=2.0, help="seconds to stay up after the last sample")


def options_from_args(args: argparse.Namespace) -> SimOptions:
    return SimOptions(
        recording=args.recording or str(DEMO),
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
        board=TextBoard(header=not args.no_header, delimiter=TEXT_DELIMITERS[args.delimiter], millis=args.millis,
                        plotter=args.plotter, garbage=args.garbage),
    )


def announce(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    return DEVICES[args.device](options_from_args(args), args)


def run_framed(options: SimOptions, args: argparse.Namespace) -> int:
    if args.transport == "serial":
        return run_serial(options, args.log, args.linger)
    return run_ble_kind(options, args, "ble")


def run_ble_kind(options: SimOptions, args: argparse.Namespace, kind: str) -> int:
    """A simulated BLE device of `kind` (options.BLE_DEVICES), its HCI served on --hci."""
    return asyncio.run(run_ble(options, *hci_address(args), args.log, args.linger, kind))


def hci_address(args: argparse.Namespace) -> tuple[str, int]:
    """--hci as (host, port)."""
    host, _, port = args.hci.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--hci must be HOST:PORT, got {args.hci!r}")
    return host, int(port)


def run_serial(options: SimOptions, log_path: str | None, linger: float) -> int:
    from firmware_sim.faults import Faults
    from firmware_sim.options import build_model
    from firmware_sim.serial_device import SerialDevice

    model = build_model(options)
    device = SerialDevice(model, Faults(options.faults), options.speed, options.baud, options.frame_ms)
    return serve_serial(device, f"serial://{device.path}?baud={options.baud}", log_path, linger)


def run_text_serial(options: SimOptions, args: argparse.Namespace) -> int:
    from firmware_sim.faults import Faults
    from firmware_sim.options import build_model
    from firmware_sim.text_device import TextSerialDevice

    if args.transport != "serial":
        raise ValueError("--device text-serial prints on a serial port: leave out --transport ble")
    device = TextSerialDevice(build_model(options), options.board, Faults(options.faults), options.speed, options.baud)
    return serve_serial(device, device.source_url(), args.log, args.linger)


def run_commanded(options: SimOptions, args: argparse.Namespace, kind: str) -> int:
    """A BITalino or a Shimmer3 (`kind`) on a serial port, or a BITalino (r)evolution BLE: idle until its
    host starts it."""
    from firmware_sim.options import build_model, commanded_device

    if args.transport == "ble" and kind != "bitalino":
        raise ValueError(f"--device {kind} is a serial port (Bluetooth classic): leave out --transport ble")
    device, _, url = commanded_device(kind, build_model(options), options)
    # which input carries which of the recording's channels: `himae run URL --channels A3` reads PLETH
    announce("inputs: " + ", ".join(f"{a}={name}" for a, name in device.carried()))
    if args.transport == "ble":
        return asyncio.run(serve_bitalino_ble(device, url, options, args))
    return serve_serial(device, url, args.log, args.linger)


async def serve_bitalino_ble(board, serial_url: str, options: SimOptions, args: argparse.Namespace) -> int:
    """The BITalino `board` behind its BLE module, the radio's HCI served on --hci, until its replay is
    over; says where it is, what it sent and (--log) what it dropped."""
    from bumble.link import LocalLink

    from firmware_sim.bitalino_ble import BitalinoBle
    from firmware_sim.ble_device import serve_hci
    from firmware_sim.options import write_log
    from himae_stream.bumble_backend import HCI_ENV

    link = LocalLink()
    module = BitalinoBle(board, link, mtu=options.mtu)
    transport, spec = await serve_hci(link, *hci_address(args))
    await module.start()
    announce(f"ble: name={module.name} address={module.address}")
    announce(f"{HCI_ENV}={spec}")
    announce(f"source: {module.source_url(spec, serial_url)}")
    try:
        await asyncio.to_thread(board.wait)
        announce(f"done: {board.produced} samples produced, {module.notifications} notifications sent")
        await asyncio.sleep(args.linger)
    finally:
        if args.log:
            write_log(args.log, board.log, board.produced)
        await module.stop()
        await transport.close()
    return 0


def serve_serial(device, url: str, log_path: str | None, linger: float) -> int:
    """Run a serial device until its replay is over; say where it is, what it sent and what it dropped."""
    from firmware_sim.options import write_log

    with device:
        announce(f"serial: {device.path}")
        announce(f"source: {url}")
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
    announce(f"source: {device.source_url(spec)}")
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


def run_lsl(options: SimOptions, args: argparse.Namespace) -> int:
    from firmware_sim.faults import Faults
    from firmware_sim.lsl_device import LslDevice
    from firmware_sim.options import build_model, write_log

    with LslDevice(build_model(options), Faults(options.faults), options.speed, options.frame_ms) as device:
        announce(f"lsl: name={device.name} type=PPG fs={device.model.fs:g}")
        announce(f"source: lsl://{device.name}")
        device.start()
        try:
            device.wait()
            announce(f"done: {device.produced} samples produced, {device.pushed} pushed")
            time.sleep(args.linger)
        finally:
            if args.log:
                write_log(args.log, device.log, device.produced)
    return 0


def write_brainflow_playback(options: SimOptions, args: argparse.Namespace) -> int:
    """A playback file that BrainFlow replays at --speed with the faults' frames left out; --log gets its drop log."""
    from firmware_sim.brainflow_playback import playback_rate, write_playback
    from firmware_sim.faults import Faults
    from firmware_sim.options import build_model, write_log

    if not args.out:
        raise ValueError("--device brainflow-playback needs --out FILE.csv")
    options.fs = options.fs or playback_rate()
    model = build_model(options)
    url, log = write_playback(model, args.out, Faults(options.faults), options.speed, options.frame_ms)
    if args.log:
        write_log(args.log, log, model.length)
    announce(f"source: {url}")
    return 0


#: `--device NAME`: the kind of device to emulate, and the function that runs it.
DEVICES = {"framed": run_framed, "text-serial": run_text_serial, "lsl": run_lsl,
           "bitalino": partial(run_commanded, kind="bitalino"), "shimmer": partial(run_commanded, kind="shimmer"),
           "brainflow-playback": write_brainflow_playback,
           "polar-verity": partial(run_ble_kind, kind="polar-verity"),
           "polar-h10": partial(run_ble_kind, kind="polar-h10")}


if __name__ == "__main__":
    from himae_stream.cli import main

    sys.exit(main(["sim", *sys.argv[1:]]))
