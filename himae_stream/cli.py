"""The `himae` command: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only to build the parser, so they
must stay cheap to import: torch and other heavy imports go inside `run`.
Expected failures (bad input, missing files, missing optional packages) end
as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from himae_stream.commands import take_positionals
from himae_stream.errors import HimaeError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("himae_stream.commands.run", "run a live source through the model"),
    "sim": ("firmware_sim.cli", "replay a recording as a serial or BLE device"),
    "embed": ("himae_stream.commands.embed", "embed recordings offline"),
    "plot": ("himae_stream.commands.plot", "plot signal, gaps, imputation and predictions"),
    "info": ("himae_stream.commands.info", "describe a model file"),
    "train": ("training.cli_train", "pretrain a HiMAE model (needs torch)"),
    "export": ("training.cli_export", "export a checkpoint to a model file (needs torch)"),
    "probe": ("training.cli_probe", "fit per-level linear probes and report"),
    "bench": ("himae_stream.commands.bench", "time this engine on this machine"),
}


class CliError(HimaeError):
    """A user-facing command failure: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line like every other failure (`himae run: error: --speed:
    expected a number > 0 or 'max', got 'fast'`), exit code 2; `--help` shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message.removeprefix('argument ')}\n")


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, (module_name, _help) in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A subcommand whose module is not part of this install is left out.
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
    return modules


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = Parser(prog="himae", description="HiMAE streaming runtime for wearable signals.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = _available_commands()
    for name, module in modules.items():
        p = sub.add_parser(name, help=COMMANDS[name][1], description=COMMANDS[name][1])
        module.add_arguments(p)
    return parser, modules


def _version() -> str:
    from himae_stream import __version__

    return f"himae-stream {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args(["run"])
    except SystemExit as exc:  # --help, --version or a bad argument: its exit code
        return exc.code
    try:
        take_positionals(args)
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("himae: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # whoever read our output stopped (`himae run | head`): a normal end, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (HimaeError, OSError, ValueError) as exc:
        print(f"himae {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2


def _message(exc: Exception) -> str:
    """The error's one line; an OSError as the file it concerns and what the system said of it
    ("x.himae: No such file or directory", not "[Errno 2] No such file or directory: 'x.himae'")."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{os.fsdecode(exc.filename)}: {exc.strerror}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
