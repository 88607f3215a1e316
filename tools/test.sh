#!/usr/bin/env bash
# The test command (README "Quick start"): set up on a fresh Debian/Ubuntu machine, run the tests.
# Extra arguments go to pytest, e.g. tools/test.sh -k dedup
set -euo pipefail
source "$(dirname "$0")/setup.sh"
export MODELSTORE_REQUIRE_RUNTIMES=1  # setup installed them: a runtime test must run, not skip
exec .venv/bin/python -m pytest -ra "$@"
