#!/usr/bin/env bash
# The test command (README "Quick start"): set up on a fresh Debian/Ubuntu machine, run the tests.
# Extra arguments go to pytest, e.g. tools/test.sh -k dedup
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec .venv/bin/python -m pytest -ra "$@"
