#!/usr/bin/env bash
# MUSE developer entry point.
#
#   ./muse.sh demo [runner args]   set up, then run the whole graph on a synthetic subject
#   ./muse.sh test [pytest args]   set up, then run every test
#   ./muse.sh setup                only set up (.venv/ and the colcon install/)
#   ./muse.sh bench [name]         set up, then run the benchmarks in bench/
#   ./muse.sh exec CMD [ARGS]      run CMD inside the workspace environment
#
# Setup is idempotent and cached: the venv is rebuilt only when requirements.txt or this
# script's setup section change, colcon only when a package's build inputs change.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
PYTHON="${MUSE_PYTHON:-python3.11}"
# Bump when the setup steps below change in a way that needs a fresh venv.
SETUP_VERSION=3
PACKAGE_DIRS=(muse_msgs muse_common muse_protocol muse_server muse_sensors muse_encoder muse_prompt muse_cloud_bridge muse_player launch)
DEBIAN_PACKAGES=(cmake g++ libportaudio2 libfluidsynth3 fluid-soundfont-gm)

say() { printf '\033[1m[muse]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[muse] error:\033[0m %s\n' "$*" >&2; exit 1; }

check_python() {
  command -v "$PYTHON" >/dev/null 2>&1 ||
    die "no '$PYTHON' on PATH. MUSE needs CPython 3.11: the ROS 2 kilted wheels on PyPI are built for it alone. Install python3.11 (Debian 12: apt-get install python3.11 python3.11-venv) or point MUSE_PYTHON at one."
  local version
  version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" ||
    die "'$PYTHON' does not run as a Python interpreter (set MUSE_PYTHON to a CPython 3.11)."
  [ "$version" = "3.11" ] ||
    die "'$PYTHON' is Python $version, but the ROS 2 kilted wheels on PyPI are built for CPython 3.11 only. Point MUSE_PYTHON at a python3.11."
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
    die "'$PYTHON' lacks the venv/ensurepip modules (Debian 12: apt-get install python3.11-venv)."
}

debian_package_missing() {
  if command -v dpkg-query >/dev/null 2>&1; then
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" != "install ok installed" ]
    return
  fi
  case "$1" in
    cmake) ! command -v cmake >/dev/null 2>&1 ;;
    g++) ! command -v g++ >/dev/null 2>&1 ;;
    libportaudio2) ! /sbin/ldconfig -p 2>/dev/null | grep 'libportaudio\.so\.2' >/dev/null ;;
    libfluidsynth3) ! /sbin/ldconfig -p 2>/dev/null | grep 'libfluidsynth\.so\.3' >/dev/null ;;
    fluid-soundfont-gm) [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] ;;
  esac
}

check_system_packages() {
  local missing=() pkg
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    if debian_package_missing "$pkg"; then missing+=("$pkg"); fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
      die "could not install Debian packages: ${missing[*]}"
  else
    die "missing system packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
  fi
}

# The ROS 2 wheels' CMake export files name the wheel builder's interpreter paths; point them
# at this venv's Python headers and numpy so rosidl_generator_py can build muse_msgs.
repair_cmake_exports() {
  local py_include np_include files
  py_include="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np_include="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
  [ -f "$py_include/Python.h" ] ||
    die "no Python.h under $py_include: the Python 3.11 headers are needed to build muse_msgs (Debian 12: apt-get install python3.11-dev)."
  files="$(grep -rlF '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' 2>/dev/null || true)"
  [ -z "$files" ] && return 0
  # shellcheck disable=SC2086
  sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_include#g" $files
}

venv_fingerprint() {
  { echo "$SETUP_VERSION"; cat "$ROOT/requirements.txt" "$ROOT/requirements-runtime.txt"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

setup_venv() {
  local want have=""
  want="$(venv_fingerprint)"
  [ -f "$VENV/.muse-setup" ] && have="$(cat "$VENV/.muse-setup")"
  if [ "$want" = "$have" ] && [ -x "$VENV/bin/python" ]; then return 0; fi
  say "creating $VENV and installing pinned dependencies (first run: a few minutes)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  touch "$VENV/COLCON_IGNORE"
  local pip_log="$ROOT/log/pip-install.txt"
  { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
    "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$ROOT/requirements.txt"; } > "$pip_log" 2>&1 ||
    { grep -v '^WARNING: Location' "$pip_log" | tail -30 >&2; die "pip install failed (full log: log/pip-install.txt)"; }
  repair_cmake_exports
  echo "$want" > "$VENV/.muse-setup"
}

build_fingerprint() {
  # Build inputs: manifests, CMake, messages, setup.py/setup.cfg and the data files, by content;
  # other Python sources by name only: they are symlinked (--symlink-install), so editing one
  # needs no rebuild, but adding or removing one does.
  (cd "$ROOT"
   files="$(find "${PACKAGE_DIRS[@]}" \
       \( -name __pycache__ -o -name '*.egg-info' -o -name build -o -name test \) -prune \
       -o -type f -print | LC_ALL=C sort)"
   grep '\.py$' <<< "$files" | grep -v '/setup\.py$' || true
   { grep -v '\.py$' <<< "$files"; grep '/setup\.py$' <<< "$files"; } | xargs -r -d '\n' sha256sum
   cat "$VENV/.muse-setup") | sha256sum | cut -d' ' -f1
}

setup_workspace() {
  local want have=""
  want="$(build_fingerprint)"
  [ -f "$ROOT/install/.muse-build" ] && have="$(cat "$ROOT/install/.muse-build")"
  [ "$want" = "$have" ] && return 0
  say "building the colcon workspace (${PACKAGE_DIRS[*]})"
  # --symlink-install leaves links to files that were since deleted (a removed .msg): drop them.
  find "$ROOT/install" "$ROOT/build" -xtype l -delete 2>/dev/null || true
  (
    cd "$ROOT"
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    colcon --log-base "$ROOT/log" build --symlink-install --base-paths "${PACKAGE_DIRS[@]}" \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" > "$ROOT/log/colcon-build.txt" 2>&1 ||
      { tail -40 "$ROOT/log/colcon-build.txt" >&2; die "colcon build failed (full log: log/colcon-build.txt)"; }
  )
  echo "$want" > "$ROOT/install/.muse-build"
}

setup() {
  check_python
  mkdir -p "$ROOT/log"
  # One setup at a time per checkout (parallel test runs would race on .venv/ and install/).
  exec 9>"$ROOT/log/.setup.lock"
  flock 9
  check_system_packages
  setup_venv
  setup_workspace
  flock -u 9
}

# The workspace environment: the venv (ROS 2 underlay) plus the colcon install/ overlay.
activate() {
  set +u
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  # shellcheck disable=SC1091
  source "$ROOT/install/setup.sh"
  set -u
  # ament_python installs console scripts to lib/<package>, not bin: the server's goes on PATH
  export PATH="$ROOT/install/muse_server/lib/muse_server:$PATH"
  # Keep DDS discovery on this host unless the user asks otherwise.
  export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
  export PYTHONUNBUFFERED=1
}

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    setup)
      setup; say "ready: .venv/ and install/ are up to date" ;;
    demo)
      setup; activate; cd "$ROOT"; exec python -m muse_bringup.run --demo "$@" ;;
    test)
      setup; activate; cd "$ROOT"; exec python -m pytest "$@" ;;
    bench)
      setup; activate; cd "$ROOT"; exec python -m bench "$@" ;;
    exec)
      setup; activate; exec "$@" ;;
    *)
      sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
  esac
}

main "$@"
