#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: system packages (FUSE for the mount) and a venv in .venv with
# modelstore installed editable. Safe to run again; it only installs what is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
missing=()
for pkg in fuse3 libfuse3-dev pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
python=${PYTHON:-python3}
"$python" -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
# pyfuse3 has no binary wheel, and llama-cpp-python compiles llama.cpp: a C/C++ compiler and
# the Python headers (a minimal Debian image has neither)
command -v gcc >/dev/null && command -v g++ >/dev/null && command -v make >/dev/null || missing+=(build-essential)
"$python" -c "import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" \
    2>/dev/null || missing+=(python3-dev)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
# llama-cpp-python compiles llama.cpp: a portable CPU build, no tools we do not use
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
log=.venv/install.log
extras=${EXTRAS:-test,runtimes}
note=""
[[ ",$extras," == *",runtimes,"* ]] && note="; a first llama-cpp-python build takes ~11 min"
echo "installing modelstore [$extras] into .venv (log: $log$note)"
if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[$extras]"; } >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "setup failed: pip install did not succeed (whole log in $log)" >&2
    exit 1
fi
.venv/bin/python -c "import modelstore.cli, pyfuse3" || { echo "setup failed: modelstore did not install" >&2; exit 1; }
