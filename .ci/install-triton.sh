#!/usr/bin/env bash
# A real Triton Inference Server for the tests, in its own venv (.tools/pytriton-venv): the
# nvidia-pytriton wheel ships the tritonserver binary (Triton 2.51) with its Python backend, and
# onnxruntime beside it runs our ONNX towers inside Triton (tests/triton_onnxruntime_backend.py).
# pytriton pins numpy<2, hence a venv of its own. Idempotent: does nothing when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PYTRITON_VENV:-.tools/pytriton-venv}
# The same interpreter as the project: the Python backend stub embeds this Python's libpython.
PYTHON=${TRITON_PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
REQUIREMENTS=("nvidia-pytriton==0.7.0" "onnxruntime>=1.20,<2")

want="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])') ${REQUIREMENTS[*]}"
stamp="$VENV/.clipserve-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  echo "install-triton: $VENV is up to date ($want)"
  exit 0
fi

started=$(date +%s)
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}"

# Checks: the server binary and this Python's stub are there, and libpython is a shared library
# (the stub loads it: tests put this directory first on LD_LIBRARY_PATH).
"$VENV/bin/python" - <<'PY'
import pathlib, sys, sysconfig
import pytriton, onnxruntime, numpy
root = pathlib.Path(pytriton.__file__).parent / "tritonserver"
server = root / "bin" / "tritonserver"
stub = root / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
libdir = pathlib.Path(sysconfig.get_config_var("LIBDIR"))
libpython = libdir / sysconfig.get_config_var("LDLIBRARY")
for path in (server, stub, libpython):
    if not path.exists():
        sys.exit(f"install-triton: missing {path}")
if not str(libpython).endswith(".so") and ".so." not in str(libpython):
    sys.exit(f"install-triton: {libpython} is not a shared library; the Python backend needs one "
             "(build Python with --enable-shared)")
print(f"install-triton: tritonserver {server}, onnxruntime {onnxruntime.__version__}, "
      f"numpy {numpy.__version__}, libpython {libpython}")
PY
echo "$want" > "$stamp"
echo "install-triton: done in $(( $(date +%s) - started )) s"
