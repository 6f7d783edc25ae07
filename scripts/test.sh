#!/usr/bin/env bash
# Install vlrank with its test extra into the active Python environment and run every test:
# the Rust unit tests (pure core, no Python) and the Python suite (golden cases, properties, server).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q ".[test]"
cargo test --release --quiet
python -m pytest -q -p no:cacheprovider
