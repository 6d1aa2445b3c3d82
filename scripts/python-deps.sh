#!/usr/bin/env bash
# Installs the Python packages the tests use (kafka-python, to read the topic
# as a non-Rust consumer would), for the current user, if missing.
set -euo pipefail
if ! python3 -c 'import kafka' 2>/dev/null; then
    echo "python-deps.sh: installing kafka-python (PyPI)" >&2
    python3 -m pip install --quiet --user 'kafka-python>=2.0.2' >&2
fi
