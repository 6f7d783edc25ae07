"""Which ONNX Runtime is installed, and one import of it that explains a missing or broken install.

``onnxruntime`` (CPU) and ``onnxruntime-gpu`` (CUDA) are two distributions of the *same* Python package:
installed together, the one pip wrote last owns the shared files, and uninstalling either deletes files
the other needs. So vlrank's base install carries neither (extras ``cpu`` and ``gpu`` pick exactly one),
and two installed ONNX Runtime distributions are refused with the command that repairs the environment.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from vlrank.extras import MissingExtraError

# Distributions that all install the ``onnxruntime`` package (pip names, normalised).
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn", "onnxruntime-training")
CPU_INSTALL = 'pip install "vlrank[cpu]"'
GPU_INSTALL = 'pip install "vlrank[gpu]"'
REPAIR = 'pip uninstall -y onnxruntime onnxruntime-gpu && pip install "vlrank[gpu]"'


class OnnxRuntimeInstallError(MissingExtraError):
    """ONNX Runtime is missing, or more than one ONNX Runtime distribution is installed."""


def installed_distributions() -> dict[str, str]:
    """``{distribution: version}`` of every installed ONNX Runtime distribution."""
    found: dict[str, str] = {}
    for name in ORT_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def install_problem(found: dict[str, str] | None = None) -> str | None:
    """A one-line description of what is wrong with the ONNX Runtime install, or None when it is sound."""
    found = installed_distributions() if found is None else found
    if not found:
        return f"ONNX Runtime is not installed: {CPU_INSTALL} (CPU) or {GPU_INSTALL} (CUDA)"
    if len(found) > 1:
        listed = ", ".join(f"{n}=={v}" for n, v in sorted(found.items()))
        return (f"{listed} are installed together; they overwrite each other's onnxruntime package (the GPU one "
                f"may silently run on the CPU). Keep exactly one: {REPAIR} (or {CPU_INSTALL} for CPU only)")
    return None


_checked: Any = None


def import_onnxruntime() -> Any:
    """``import onnxruntime``, or an ``OnnxRuntimeInstallError`` saying which extra to install or how to
    repair two clashing distributions. The install is checked once per process (a sound one stays sound)."""
    global _checked
    if _checked is not None:
        return _checked
    found = installed_distributions()
    if len(found) > 1:
        raise OnnxRuntimeInstallError(install_problem(found) or "", field="onnxruntime")
    try:
        import onnxruntime
    except ImportError as exc:
        if found:  # metadata present but the package broken, e.g. after uninstalling one of two
            name, version = next(iter(found.items()))
            raise OnnxRuntimeInstallError(
                f"{name}=={version} is installed but `import onnxruntime` fails ({exc}); reinstall it: "
                f"pip install --force-reinstall --no-deps {name}=={version}", field="onnxruntime") from exc
        raise OnnxRuntimeInstallError(install_problem(found) or "", field="onnxruntime") from exc
    _checked = onnxruntime
    return onnxruntime


__all__ = ["ORT_DISTRIBUTIONS", "OnnxRuntimeInstallError", "installed_distributions", "install_problem",
           "import_onnxruntime", "CPU_INSTALL", "GPU_INSTALL", "REPAIR"]
