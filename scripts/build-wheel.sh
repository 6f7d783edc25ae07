#!/usr/bin/env bash
# Build vlrank's release wheel: abi3 (one wheel for CPython >= 3.10), manylinux_2_28 x86_64, linked with
# zig so the glibc symbol versions it needs are 2.28 or older whatever glibc this machine has; maturin's
# built-in auditwheel check refuses the wheel if any symbol needs more.
#
# Why manylinux_2_28 and not manylinux2014 (glibc 2.17): the ONNX Runtime wheels vlrank runs on
# (onnxruntime 1.31+/onnxruntime-gpu 1.31+) are published for manylinux_2_27/_2_28 only, so an older tag
# on vlrank would not make an install work anywhere 2_28 does not; and the manylinux2014 zig build did
# not produce a wheel on this project's build machine. 2_28 covers Debian 11+, Ubuntu 20.04+, RHEL /
# Rocky / Alma 8+, Amazon Linux 2023 (not Amazon Linux 2: glibc 2.26 - ONNX Runtime cannot run there either).
#
# Usage: scripts/build-wheel.sh [OUT_DIR]   (default dist/); prints the wheel's path on the last line.
# Installs maturin and ziglang into the active Python environment when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
compat="${VLRANK_MANYLINUX:-manylinux_2_28}"

python -m pip show -q maturin >/dev/null 2>&1 || python -m pip install -q "maturin>=1.7,<2"
python -m pip show -q ziglang >/dev/null 2>&1 || python -m pip install -q "ziglang>=0.13"

mkdir -p "$out"
rm -f "$out"/vlrank-*.whl
python -m maturin build --release --compatibility "$compat" --zig --out "$out" >&2
ls "$out"/vlrank-*.whl
