#!/usr/bin/env bash
# Generate and install the ROS 2 interface packages that no PyPI wheel provides into a virtualenv that holds the
# ROS 2 Kilted PyPI wheels: tf2_msgs (only TFMessage; skipped when importable, e.g. on a real ROS install) and
# relocal_msgs (rebuilt when not importable or when its sources are newer than the installed stamp).
#
#   scripts/build_interfaces.sh [VENV]      (default: .venv)
#
# Uses cmake directly: the `rosidl generate` CLI of the wheels is broken ("duplicate entry point 'py'").
# Quiet unless a step fails; then the step's log is printed. Idempotent: a second run only checks imports.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_arg="${1:-.venv}"
[[ "$venv_arg" = /* ]] || venv_arg="$repo/$venv_arg"
if [[ ! -x "$venv_arg/bin/python" ]]; then
  echo "build_interfaces: no virtualenv at $venv_arg (expected $venv_arg/bin/python)" >&2
  exit 1
fi
venv="$(cd "$venv_arg" && pwd)"
python="$venv/bin/python"
build_root="$repo/build/interfaces"

importable() {
  "$python" -c "import $1" >/dev/null 2>&1
}

# Run a step with its output in a log; print the log only when the step fails.
run_logged() {
  local log="$1"; shift
  if ! "$@" >>"$log" 2>&1; then
    echo "build_interfaces: failed: $*" >&2
    echo "---- last lines of $log ----" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
}

build_package() {
  local name="$1" src="$2"
  local bdir="$build_root/$name" log="$build_root/$name.log"
  for tool in cmake make g++; do
    command -v "$tool" >/dev/null || { echo "build_interfaces: '$tool' not found (run scripts/install_system_deps.sh)" >&2; exit 1; }
  done
  mkdir -p "$bdir"
  : >"$log"
  # AMENT_PREFIX_PATH: the rosidl cmake code finds its typesupports through the ament index in the venv.
  export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
  run_logged "$log" cmake -S "$src" -B "$bdir" \
    -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DPython3_EXECUTABLE="$python" -DPython3_FIND_VIRTUALENV=ONLY
  run_logged "$log" cmake --build "$bdir" -j "$(nproc 2>/dev/null || echo 2)"
  run_logged "$log" cmake --install "$bdir"
}

if ! importable tf2_msgs.msg; then
  build_package tf2_msgs "$repo/interfaces/pypi_only/tf2_msgs"
  importable tf2_msgs.msg || { echo "build_interfaces: tf2_msgs built but 'import tf2_msgs.msg' fails" >&2; exit 1; }
fi

relocal_src="$repo/interfaces/relocal_msgs"
stamp="$venv/share/relocal_msgs/relocal_msgs.build-stamp"
if ! importable relocal_msgs.msg || [[ ! -f "$stamp" ]] \
    || [[ -n "$(find "$relocal_src" -type f -newer "$stamp" -print -quit)" ]]; then
  build_package relocal_msgs "$relocal_src"
  importable relocal_msgs.msg || { echo "build_interfaces: relocal_msgs built but 'import relocal_msgs.msg' fails" >&2; exit 1; }
  touch "$stamp"
fi
