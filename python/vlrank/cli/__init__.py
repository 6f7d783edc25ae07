"""The ``vlrank`` command line: one sub-module per sub-command, each exposing
``register(subparsers)`` (adds its parser and sets ``func``) so this file stays a thin dispatcher.
JSON goes to stdout, human messages to stderr; errors exit non-zero without a traceback: 1 for a failed
run, 2 for a usage error or a missing extra (the message names the ``pip install "vlrank[EXTRA]"``).
"""

from __future__ import annotations

import argparse
import sys

from vlrank.cli import compare, demo, doctor, embed, export, rerank, serve, tokens
from vlrank.errors import VlrankError
from vlrank.extras import MissingExtraError, missing_extra

# Sub-commands, in the order --help lists them.
COMMANDS = (demo, rerank, embed, export, tokens, serve, doctor, compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlrank",
        description="Serve Qwen3 retrieval models (rerank and embed, text and images) on ONNX Runtime.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vlrank {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def _version() -> str:
    from vlrank.version import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except MissingExtraError as exc:  # an installation fault: one line naming the extra, like a usage error
        print(f"vlrank: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        missing = missing_extra(exc, feature=f"vlrank {args.command}")
        if missing is None:
            raise
        print(f"vlrank: error: {missing}", file=sys.stderr)
        return 2
    except VlrankError as exc:
        print(f"vlrank: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vlrank: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vlrank ... | head`: the reader left; nothing more to say
        return 1
    except OSError as exc:  # a file the user named, a full disk: a one-line message, not a traceback
        print(f"vlrank: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
