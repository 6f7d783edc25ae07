"""The ``vlrank`` command line: one sub-module per sub-command, each exposing
``register(subparsers)`` (adds its parser and sets ``func``) so this file stays a thin dispatcher.
JSON goes to stdout, human messages to stderr; errors exit non-zero without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from vlrank.cli import demo, embed, export, rerank, serve, tokens
from vlrank.errors import VlrankError

# Sub-commands, in the order --help lists them.
COMMANDS = (demo, rerank, embed, export, tokens, serve)


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
