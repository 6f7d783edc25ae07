"""What the sub-commands share: their parser setup, loading the model, reading JSON-lines inputs, writing
one JSON result to stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def add_command(subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str,
                run: Callable[[argparse.Namespace], int], examples: str | None = None) -> argparse.ArgumentParser:
    """A sub-command's parser, ``run`` as its ``func``. ``examples`` (the epilog) and the description are
    printed as written (RawDescriptionHelpFormatter keeps the example lines' layout); a command without
    examples gets argparse's wrapping."""
    formatter = argparse.RawDescriptionHelpFormatter if examples else argparse.HelpFormatter
    p = subparsers.add_parser(name, help=help, description=description, epilog=examples, formatter_class=formatter)
    p.set_defaults(func=run)
    return p


def add_model_command(subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str,
                      run: Callable[[argparse.Namespace], int], examples: str) -> argparse.ArgumentParser:
    """A model-running sub-command: ``add_command`` plus its ``--model``; the command adds its own options,
    then ``add_model_options``."""
    p = add_command(subparsers, name, help=help, description=description, run=run, examples=examples)
    p.add_argument("--model", required=True, help="exported model directory, checkpoint directory or hub id")
    return p


def add_export_flags(p: argparse.ArgumentParser) -> None:
    """How a checkpoint or hub id is exported on first use (cached per checkpoint and options); an exported
    directory is used as it is."""
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="first-use export: weight storage (default: the --precision)")
    p.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16", "int8"],
                   help="first-use export: compute dtype (float32 for CPU; float16 / bfloat16 for CUDA; int8: CPU "
                   "int8 activations, with --quantize)")
    p.add_argument("--quantize", default=None, choices=["int8", "int4"],
                   help="first-use export: block-quantized weights (float32 compute unless --precision int8)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options every model-running sub-command takes after its own."""
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--providers", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--intra-op-threads", type=int, default=None, metavar="N", dest="threads",
                   help="ONNX Runtime intra-op threads (default: one per core)")
    add_export_flags(p)


def load_model(cls: Callable[..., Any], args: argparse.Namespace) -> Any:
    """``cls`` (vlrank.Reranker / vlrank.Embedder) for ``--model`` and the options of ``add_model_options``."""
    return cls(args.model, max_length=args.max_length, providers=args.providers, threads=args.threads,
               dtype=args.dtype, precision=args.precision, quantize=args.quantize)


__all__ = ["read_jsonl", "write_json", "collect_inputs", "add_command", "add_model_command", "add_model_options",
           "add_export_flags", "load_model"]
