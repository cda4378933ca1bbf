"""Command line: argument parsing and exit codes only.

    coreml2hwx MODEL [debug] [-o DIR] ...   compile (the original tool's words still work)
    coreml2hwx inspect FILE [--json] ...    list any hwx / anec / raw task stream
    coreml2hwx run PROGRAM ...              simulate a program
    coreml2hwx reference MODEL ...          evaluate the source model with numpy
    coreml2hwx report MODEL ...             per-layer placement, reasons and cost

Each command lives in `coreml2hwx/commands/<name>.py` with `add_arguments(parser)` and `run(args)`;
its module is imported only when the command is used.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from coreml2hwx.errors import Coreml2hwxError, UsageError

COMMANDS = {
    "compile": "compile a Core ML model to an ANE program (default command)",
    "inspect": "list the tasks, registers, constants and tensors of an .hwx/.anec/raw task stream",
    "run": "execute a program (or a compiled output folder) in the simulator",
    "reference": "evaluate a Core ML model with the numpy reference evaluator",
    "report": "show where each layer would run, why, and at what estimated cost",
}


def _command_module(name):
    return importlib.import_module(f"coreml2hwx.commands.{name}")


def build_parser(command):
    parser = argparse.ArgumentParser(
        prog="coreml2hwx" if command == "compile" else f"coreml2hwx {command}",
        description=COMMANDS[command],
        epilog="Commands: " + ", ".join(COMMANDS) + ". Without a command, MODEL is compiled.",
    )
    _command_module(command).add_arguments(parser)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "compile"
    if argv and argv[0] in COMMANDS:
        command = argv.pop(0)
    elif argv and argv[0] in ("-h", "--help") and len(argv) == 1:
        print(__doc__.strip())
        return 0
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        return _command_module(command).run(args) or 0
    except UsageError as err:
        print(f"coreml2hwx {command}: {err.line()}", file=sys.stderr)
        return 2
    except Coreml2hwxError as err:
        print(f"coreml2hwx: error: {err.line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("coreml2hwx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # a bug of ours: one line, and the traceback on request
        if os.environ.get("COREML2HWX_TRACEBACK"):
            raise
        print(f"coreml2hwx: internal error: {type(err).__name__}: {err} "
              "(set COREML2HWX_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
