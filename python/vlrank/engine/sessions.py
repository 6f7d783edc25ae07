"""ONNX Runtime sessions: provider choice, session options, loading a graph.

Threads: ONNX Runtime owns the model's compute threads (its intra-op pool sizes itself to the cores);
vlrank adds none around a run. Preprocessing parallelism lives in the Rust core, which releases the GIL.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from vlrank.errors import InvalidInputError, ModelDirectoryError, RuntimeUnavailableError

# vlrank's own ort_options key: SessionOptions.intra_op_num_threads (ORT has no config entry for it). Set by
# ``Reranker(..., threads=N)`` / ``vlrank serve --intra-op-threads N``; every session of the model gets it.
INTRA_OP_THREADS = "vlrank.intra_op_num_threads"

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_ALIASES = {"cpu": [CPU], "cuda": [CUDA, CPU], "gpu": [CUDA, CPU]}


def _ort():
    from vlrank.engine.ort_install import import_onnxruntime  # the extras cpu / gpu; both at once refused

    return import_onnxruntime()


def resolve_providers(providers: str | Sequence[str] | None) -> list[str]:
    """None / "auto": CUDA when this onnxruntime has it, else CPU. "cpu" / "cuda" or a list of ORT
    provider names. Asking for CUDA where it is missing warns and falls back to CPU."""
    available = _ort().get_available_providers()
    if providers is None or providers == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    if isinstance(providers, str):
        if providers.lower() not in _ALIASES:
            raise InvalidInputError(
                f"providers={providers!r}; pass 'auto', 'cpu', 'cuda' or a list of ONNX Runtime provider names",
                field="providers",
            )
        wanted = _ALIASES[providers.lower()]
    else:
        # Anything but a list of names is a bad `providers` argument, never an unloadable model.
        if isinstance(providers, (bytes, dict)) or not isinstance(providers, Sequence):
            raise InvalidInputError(
                f"providers={providers!r}; pass 'auto', 'cpu', 'cuda' or a list of ONNX Runtime provider names",
                field="providers",
            )
        wanted = list(providers)
        if not wanted or not all(isinstance(p, str) for p in wanted):
            raise InvalidInputError("providers must be a non-empty list of provider names, e.g. "
                                    "['CUDAExecutionProvider', 'CPUExecutionProvider']", field="providers")
    missing = [p for p in wanted if p not in available]
    if CUDA in missing:
        warnings.warn(
            "CUDA was requested but this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu "
            "and a matching CUDA); running on CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    chosen = [p for p in wanted if p in available]
    if not chosen:
        if missing == [CUDA]:
            return [CPU]
        raise RuntimeUnavailableError(
            f"none of the providers {wanted} is available; this onnxruntime offers {available}",
            field="providers",
        )
    return chosen


def providers_for_precision(precision: str, providers: str | Sequence[str] | None, *,
                            available: Sequence[str] | None = None) -> list[str]:
    """The providers to run an export of ``precision`` on. float32 graphs run anywhere
    (``resolve_providers``); int8-compute graphs on the CPU provider only (``_cpu_only``). A float16 /
    bfloat16 graph is built for CUDA: with CUDA available it runs on the CUDA EP; without it, or with
    providers that leave CUDA out, it is refused — ONNX Runtime's CPU EP has no half kernels for most of
    its ops and would fall back op by op (silently slow and off-reference), so the message names the
    export to make instead. ``available``: the providers of
    this onnxruntime (default: ask it)."""
    if precision == "float32":
        return resolve_providers(providers)
    if precision == "int8":
        return _cpu_only(precision, providers)
    have = list(_ort().get_available_providers() if available is None else available)
    remake = ("export a float32 model for the CPU (`vlrank export SRC OUT --precision float32`, or "
              "vlrank.export(..., precision='float32'))")
    explicit = providers is not None and providers != "auto"
    if explicit:
        wanted = _ALIASES.get(providers.lower(), []) if isinstance(providers, str) else list(providers)
        if isinstance(providers, str) and providers.lower() not in _ALIASES:
            resolve_providers(providers)  # raises the providers error
        if CUDA not in wanted:
            raise InvalidInputError(
                f"providers={providers!r} leaves out CUDA, but this is a {precision} export, built for "
                f"CUDAExecutionProvider; pass providers='cuda' (with onnxruntime-gpu), or {remake}",
                field="providers")
    if CUDA not in have:
        raise ModelDirectoryError(
            f"this is a {precision} export, built for CUDAExecutionProvider, and this onnxruntime has no CUDA "
            f"(providers: {have}); install onnxruntime-gpu on a CUDA machine, or {remake}", field="model")
    return [CUDA, CPU] if CPU in have else [CUDA]


def _cpu_only(precision: str, providers: str | Sequence[str] | None) -> list[str]:
    """An int8-compute export is a CPU graph: its integer GEMMs (DynamicQuantizeMatMul, MatMulNBits at
    accuracy level 4) are CPU kernels. It runs on the CPU provider alone; a request naming CUDA (or
    leaving the CPU out) is refused rather than run silently on the CPU or split across devices."""
    if providers is None or providers == "auto":
        return [CPU]
    if isinstance(providers, str) and providers.lower() in _ALIASES:
        wanted = _ALIASES[providers.lower()]
    else:
        with warnings.catch_warnings():  # only its validation is wanted here, not its CUDA fallback warning
            warnings.simplefilter("ignore", RuntimeWarning)
            resolve_providers(providers)  # a malformed value raises its own providers error
        wanted = list(providers)
    if wanted != [CPU]:
        raise InvalidInputError(
            f"providers={providers!r}, but this is an {precision}-compute export, built for the CPU "
            "(CPUExecutionProvider): pass providers='cpu' (or 'auto'); for a GPU export a float16 / bfloat16 "
            "model (`vlrank export SRC OUT --precision bfloat16`)", field="providers")
    return [CPU]


def create_session(model_path: str | Path, *, providers: str | Sequence[str] | None = None,
                   ort_options: Mapping[str, str] | None = None, precision: str = "float32"):
    """An InferenceSession with full graph optimisation on the providers ``providers_for_precision``
    chooses for a graph of ``precision`` (the export's compute dtype).

    ``ort_options``: ONNX Runtime session config entries (``SessionOptions.add_session_config_entry``),
    e.g. ``{"session.intra_op.allow_spinning": "0"}`` — a server sets it so idle ORT threads do not spin
    on the cores its event loop needs between batches."""
    ort = _ort()
    path = Path(model_path)
    if not path.is_file():
        raise ModelDirectoryError(f"{path} is missing; re-export the model", field="model")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    for key, value in check_ort_options(ort_options).items():
        if key == INTRA_OP_THREADS:
            options.intra_op_num_threads = int(value)
        else:
            options.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=providers_for_precision(precision, providers))
    except (RuntimeUnavailableError, InvalidInputError):
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception classes
        raise load_failure(path, exc) from exc


# ONNX Runtime reports every load failure as one exception class; its message tells the causes apart.
# Rule: name what failed and the fix for that cause — only a damaged file is fixed by re-exporting.
_CUDA_LIBS = ("libcudnn", "libcublas", "libcudart", "libcufft", "libcurand", "cudnn", "cuda driver",
              "cuda_provider", "libonnxruntime_providers_cuda", "cudaerror", "cuda failure", "no cuda-capable")
_OOM = ("out of memory", "bad_alloc", "failed to allocate", "cudaerrormemoryallocation", "cannot allocate memory")
_CORRUPT = ("protobuf parsing failed", "invalid_protobuf", "load model from", "no graph", "external data",
            "model_path", "invalid model", "corrupt", "unexpected end", "failed to load model")


def load_failure(path: Path, exc: BaseException) -> Exception:
    """The typed error for an ONNX Runtime load failure of ``path``, saying which of the causes it was."""
    text = str(exc)
    low = text.lower()
    if any(k in low for k in _OOM):
        return RuntimeUnavailableError(
            f"{path}: ONNX Runtime ran out of memory loading it ({text}); free memory (fewer models per "
            "process or GPU), or load a smaller export (quantize='int8' / 'int4', or precision='float16' on "
            "CUDA)", field="model")
    if any(k in low for k in _CUDA_LIBS):
        return RuntimeUnavailableError(
            f"{path}: ONNX Runtime's CUDA provider could not start ({text}); install the CUDA 13 and cuDNN 9 "
            "libraries onnxruntime-gpu needs (README 'Install'), or pass providers='cpu' with a float32 "
            "export", field="providers")
    if any(k in low for k in _CORRUPT):
        return ModelDirectoryError(
            f"{path}: the ONNX file is damaged or incomplete ({text}); re-export the model (vlrank export) "
            "or copy the whole directory again", field="model")
    return ModelDirectoryError(f"{path}: ONNX Runtime could not load it ({text}); check that the directory is "
                               "a complete export made by this vlrank version, else re-export the model",
                               field="model")


def check_ort_options(ort_options: object) -> dict[str, str]:
    """Validate ``ort_options`` (a mapping of str to str) before any session is built."""
    if ort_options is None:
        return {}
    if not isinstance(ort_options, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in ort_options.items()):
        raise InvalidInputError("ort_options: pass a mapping of ONNX Runtime session config keys to string "
                                'values, e.g. {"session.intra_op.allow_spinning": "0"}', field="ort_options")
    threads = ort_options.get(INTRA_OP_THREADS)
    if threads is not None and not (threads.isdigit() and int(threads) >= 1):
        raise InvalidInputError(f"ort_options[{INTRA_OP_THREADS!r}]={threads!r}; pass a positive integer as a "
                                "string (or threads=N)", field="threads")
    return dict(ort_options)


__all__ = ["INTRA_OP_THREADS", "CPU", "CUDA", "resolve_providers", "providers_for_precision", "create_session",
           "check_ort_options", "load_failure"]
