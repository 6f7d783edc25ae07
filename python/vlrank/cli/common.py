"""What the sub-commands share: reading JSON-lines inputs, writing one JSON result to stdout."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from vlrank.errors import InvalidInputError, VlrankError


def read_jsonl(path: Path, *, field: str) -> list:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInputError(f"{field}: cannot read {path} ({exc})", field=field) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{field}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); write the "
                                "JSON lines file in UTF-8", field=field) from exc
    items = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{field}: {path}:{n} is not JSON ({exc}); write one JSON value per line",
                                        field=field) from exc
    return items


def write_json(obj: object, *, indent: int | None = None) -> None:
    """Print ``obj`` as one JSON document on stdout.

    A reader that went away (``vlrank rerank ... | head``) is not our error: exit 1 quietly (as Python's
    docs advise for SIGPIPE). Other write errors (a full disk) are a one-line error. Either way stdout is
    pointed at /dev/null so that the interpreter's final flush does not print "Exception ignored" too."""
    try:
        json.dump(obj, sys.stdout, ensure_ascii=False, indent=indent)
        sys.stdout.write("\n")
        sys.stdout.flush()
    except OSError as exc:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(exc, BrokenPipeError):
            raise SystemExit(1) from None
        raise VlrankError(f"stdout: cannot write the result ({exc.strerror or exc}); write to a file or pipe "
                          "with free space", field="stdout") from None


def collect_inputs(given: list, path: Path | None, *, file_flag: str, field: str, missing: str) -> list:
    """The items named on the command line, then those of the JSON-lines file ``path``; none at all is an
    error on ``field`` saying ``missing``."""
    items = list(given)
    if path is not None:
        items += read_jsonl(path, field=file_flag)
    if not items:
        raise InvalidInputError(missing, field=field)
    return items


def add_model_options(p) -> None:
    """The options every model-running sub-command takes after its own."""
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--providers", default=None, help="auto (default), cpu or cuda")


__all__ = ["read_jsonl", "write_json", "collect_inputs", "add_model_options"]
