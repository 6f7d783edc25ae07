"""An exported directory's manifest checked against what it names: the tokenizer's ids and the graphs'
inputs and outputs, so a directory whose files were edited or mixed fails at load.

The format itself (``vlrank.json``, the ``Manifest`` dataclass, ``read_manifest``) is ``vlrank.modeldir``,
re-exported here for the engine's callers.
"""

from __future__ import annotations

from typing import Any

from vlrank.errors import ModelDirectoryError
from vlrank.modeldir import MANIFEST, Dims, ImageDefaults, Manifest, Prompt, VisionMeta, read_manifest, token_text


def check_tokenizer(manifest: Manifest, tokenizer: Any) -> None:
    """The tokenizer file agrees with the manifest: every special id is the tokenizer's id of that token,
    and the tokenizer's ids fit the decoder's embedding table (dims.vocab_size)."""
    problems = []
    if tokenizer.vocab_size > manifest.dims.vocab_size:
        problems.append(f"the tokenizer has {tokenizer.vocab_size} tokens, more than dims.vocab_size = "
                        f"{manifest.dims.vocab_size}")
    for name, value in sorted(manifest.special.items()):
        actual = tokenizer.token_to_id(token_text(name))
        if actual != value:
            problems.append(f"special_tokens.{name} = {value} but the tokenizer's id of "
                            f"{token_text(name)!r} is {actual}")
    _report(manifest, "tokenizer", problems)


def check_graph(manifest: Manifest, session: Any, *, graph: str) -> None:
    """The ``graph`` ("decoder" | "vision") session's own inputs and outputs agree with the manifest
    (names, hidden size, deepstack layers, patch size); only fixed graph dims are compared. A directory
    whose files were edited or mixed fails here, at load, instead of inside ONNX Runtime at call time."""
    ins = {i.name: list(i.shape) for i in session.get_inputs()}
    outs = {o.name: list(o.shape) for o in session.get_outputs()}
    d = manifest.dims
    want: list[tuple[str, dict[str, list[Any]], str, int, Any, str]] = []  # (kind, table, name, axis, value, what)
    problems = []
    if graph == "decoder":
        vl = manifest.family == "qwen3_vl"
        names = ["input_ids", "attention_mask", "position_ids"] + (["image_embeds", "deepstack_embeds"] if vl else [])
        missing = [n for n in names if n not in ins]
        if missing:
            problems.append(f"the decoder graph lacks the inputs {missing} (it has {sorted(ins)})")
        if manifest.decoder_output not in outs:
            problems.append(f"decoder.output = {manifest.decoder_output!r} is not an output of the decoder graph "
                            f"(it has {sorted(outs)})")
        want += [("input", ins, "position_ids", -1, 3 if vl else 2, "rank")]
        if vl:
            want += [("input", ins, "image_embeds", -1, d.hidden_size, "dims.hidden_size"),
                     ("input", ins, "deepstack_embeds", 0, d.deepstack_layers, "dims.deepstack_layers"),
                     ("input", ins, "deepstack_embeds", -1, d.hidden_size, "dims.hidden_size")]
        if manifest.task == "embed":
            want.append(("output", outs, manifest.decoder_output, -1, d.hidden_size, "dims.hidden_size"))
        elif not vl:
            want.append(("output", outs, manifest.decoder_output, -1, 2, "[no, yes] logits"))
    elif graph == "vision":
        want += [("output", outs, "image_embeds", -1, d.hidden_size, "dims.hidden_size"),
                 ("output", outs, "deepstack_embeds", 0, d.deepstack_layers, "dims.deepstack_layers")]
        if manifest.image is not None:
            im = manifest.image
            want.append(("input", ins, "pixel_values", -1, 3 * im.temporal_patch_size * im.patch_size ** 2,
                         "3 x image.temporal_patch_size x image.patch_size^2"))
        for name in ("pixel_values", "image_embeds", "deepstack_embeds"):
            if name not in ins and name not in outs:
                problems.append(f"the vision graph has no {name!r}")
        if manifest.vision is not None:  # the tower runs with the manifest's numbers: the graph must agree
            props = session.get_modelmeta().custom_metadata_map
            for key, value in manifest.vision.props().items():
                if key in props and props[key] != value:
                    problems.append(f"the vision graph's metadata {key} is {props[key]}, the manifest says {value} "
                                    f"(vision.{key.rpartition('.')[2]})")
    for kind, table, name, axis, value, what in want:
        shape = table.get(name)
        if shape is None:
            continue  # reported above as a missing input / output
        if what == "rank":
            if len(shape) != value:
                problems.append(f"the decoder's position_ids has rank {len(shape)}, the {manifest.family} family "
                                f"takes rank {value}")
            continue
        got = shape[axis] if shape else None
        if isinstance(got, int) and got != value:
            problems.append(f"the {graph} graph's {kind} {name} has size {got} on axis {axis}, the manifest says "
                            f"{value} ({what})")
    _report(manifest, f"{graph} graph", problems)


def _report(manifest: Manifest, what: str, problems: list[str]) -> None:
    if problems:
        raise ModelDirectoryError(
            f"{manifest.root}: {MANIFEST} does not match its {what}: " + "; ".join(problems)
            + f"; re-export the model (vlrank export SRC {manifest.root})",
            field="model",
        )


__all__ = [
    "check_graph",
    "check_tokenizer",
    "MANIFEST",
    "Dims",
    "Prompt",
    "ImageDefaults",
    "VisionMeta",
    "Manifest",
    "read_manifest",
]
