#!/usr/bin/env bash
# Build vlrank's release wheel (scripts/build-wheel.sh: abi3, manylinux_2_28), install it with its test
# extra into the active Python environment and run every test: the Rust unit tests (pure core, no Python)
# and the Python suite (golden cases, properties, server, clients). tests/test_wheel.py installs the same
# wheel into fresh venvs (VLRANK_TEST_WHEEL), so the Rust core is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel="$(bash scripts/build-wheel.sh dist | tail -n 1)"
python -m pip install -q "${wheel}[test]"
export VLRANK_TEST_WHEEL="$PWD/$wheel"
# tests/golden's tokenizer.json is rebuilt offline (byte-for-byte the reference's) before the Rust tests read it
python tests/golden_tokenizer.py
# fastbuild: release optimisation without LTO — the unit tests need speed, not the wheel's link-time work
cargo test --profile fastbuild --quiet
# pytest loads only the plugins pyproject's addopts name (hypothesis, anyio): an auto-loaded plugin's whole
# distribution is marked for assertion rewriting (langsmith's 464 modules, schemathesis' 385), recompiled on every
# run where bytecode is not cached; schemathesis is used as a library, not as a pytest plugin.
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
# VLRANK_FAST=1: the fast subset (README "Run the tests"), without the slow pipelines and the fresh-venv installs
if [ "${VLRANK_FAST:-0}" = 1 ]; then
  python -m pytest -q -p no:cacheprovider -m "not slow and not network"
else
  python -m pytest -q -p no:cacheprovider
fi
