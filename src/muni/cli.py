"""The `muni` command line: one sub-command group per module under `muni.commands`.

Every `MuniError` (bad input, missing data, foreign checkpoint) is printed as one line and
exits with status 2; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from muni.commands import bench, data, evaluate, sample, train
from muni.errors import MuniError

# command name -> module exposing `add_parser(subparsers)`; each parser sets `func(args) -> int`.
COMMANDS = {"data": data, "train": train, "sample": sample, "eval": evaluate, "bench": bench}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: exit 2, one clear line
        self.print_usage(sys.stderr)
        _exit(f"{self.prog}: error: {message}")


def _exit(msg: str):
    print(msg, file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from muni import __version__

    parser = _Parser(prog="muni", description="Any-to-any multimodal generation.")
    parser.add_argument("--version", action="version", version=f"muni {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse's own message joins them with spaces: an empty or blank token vanishes
        parser.error("unrecognized arguments: " + " ".join(
            t if t and t.isprintable() and shlex.quote(t) == t else repr(t) for t in extra))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MuniError as e:
        print(f"muni: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("muni: interrupted", file=sys.stderr)
        return 130
