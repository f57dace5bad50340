#!/usr/bin/env bash
# One entry point for a fresh machine: finds a Python >= 3.12, builds .venv with qnetlab and its
# test extras (only when pyproject.toml changed), then runs the requested job.
#   ./dev.sh run [args]   the main job on the built-in simulated lab (qnetlab demo); args are the
#                         demo's (--pairs N, --no-report) and qnetlab's own (--station, --data,
#                         --debug), in any order
#   ./dev.sh test [args]  lint (ruff), the import contracts (lint-imports) and the test suite
#   ./dev.sh bench        python benchmarks/run.py
#   ./dev.sh python ...   any command inside the environment
set -euo pipefail
cd "$(dirname "$0")"
VENV="${QNETLAB_VENV:-.venv}"

find_python() {
  local c
  local candidates=(python3.13 python3.12 python3 python)
  local roots=("${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv)
  for r in "${roots[@]}"; do
    [ -n "$r" ] && [ -d "$r/versions" ] || continue
    for c in "$r"/versions/3.1[2-9]*/bin/python3 "$r"/versions/3.[2-9][0-9]*/bin/python3; do
      [ -x "$c" ] && candidates+=("$c")
    done
  done
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 &&
       "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

ensure_env() {
  local stamp="$VENV/.qnetlab-installed"
  local want
  want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  local py
  if ! py="$(find_python)"; then
    echo "dev.sh: no Python >= 3.12 found (looked for python3.13, python3.12, python3, python" >&2
    echo "        on PATH and under pyenv's versions/). Install Python 3.12+ and retry." >&2
    exit 3
  fi
  echo "dev.sh: setting up $VENV with $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))" >&2
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]' >&2
  echo "$want" > "$stamp"
}

# qnetlab's own options go before the command, the demo's after it
run_demo() {
  local global=() local_args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --station|--data) global+=("$1" "${2:-}"); shift 2 || shift ;;
      --station=*|--data=*|--debug) global+=("$1"); shift ;;
      *) local_args+=("$1"); shift ;;
    esac
  done
  exec qnetlab ${global[@]+"${global[@]}"} demo ${local_args[@]+"${local_args[@]}"}
}

cmd="${1:-run}"; shift || true
ensure_env
case "$VENV" in /*) VENV_BIN="$VENV/bin" ;; *) VENV_BIN="$PWD/$VENV/bin" ;; esac
export PATH="$VENV_BIN:$PATH"
export MPLBACKEND="${MPLBACKEND:-Agg}"
case "$cmd" in
  run)    run_demo "$@" ;;
  selfcheck) exec python -m qnetlab.selfcheck "$@" ;;
  test)   ruff check . && python tools/lint_imports.py && exec python -m pytest "$@" ;;
  bench)  exec python benchmarks/run.py "$@" ;;
  python) exec python "$@" ;;
  *)      exec "$cmd" "$@" ;;
esac
