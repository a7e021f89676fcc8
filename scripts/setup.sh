#!/usr/bin/env bash
# Set up qvla on a fresh Debian 12 / CPython 3.11 machine with no ROS apt repository:
#   1. check the toolchain (Python 3.11, C/C++ compiler, CMake),
#   2. create the project-local venv .venv with pinned ROS 2 Kilted wheels, torch, transformers...
#   3. patch the ROS wheels' exported CMake paths (no root needed),
#   4. make sure the offscreen-rendering libraries for the MuJoCo demo exist,
#   5. colcon build the three packages into install/,
#   6. with --test-tools (what scripts/test.sh passes): install the test-time ROS 2 tools (launch,
#      launch_ros, ros2cli and its verbs) from shared/ros2-extras when that folder exists.
# Every step is skipped when its inputs did not change, so a warm rerun takes seconds.
# A step that fails removes its "ready" stamp: a half-built venv or workspace is never reused.
#
# Environment knobs:
#   QVLA_PYTHON=/path/to/python3.11   interpreter to build the venv from (default: python3.11 or python3)
#   QVLA_TORCH=cpu|cuda               cpu (default): the local CPU wheel; cuda: PyPI's CUDA build
#   QVLA_SKIP_RENDER_LIBS=1           do not check/install the EGL libraries
#   QVLA_ROS2_EXTRAS=/path            the ros2-extras folder (default: ../shared/ros2-extras, then
#                                     ./shared/ros2-extras, relative to the repository root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# One setup at a time per checkout: two colcon builds into the same install/ corrupt it.
mkdir -p "$ROOT/log"
exec 9>"$ROOT/log/.setup.lock"
flock 9
VENV="$ROOT/.venv"
REQ="$ROOT/requirements"
TORCH_VARIANT="${QVLA_TORCH:-cpu}"
TORCH_VERSION="2.13.0"
VENV_LAYOUT=1  # bump when the venv recipe below changes in a way lock.txt does not show
TEST_TOOLS=0
for arg in "$@"; do
    case "$arg" in
        --test-tools) TEST_TOOLS=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) printf 'setup: unknown option %s (see --help)\n' "$arg" >&2; exit 2 ;;
    esac
done

say() { printf 'setup: %s\n' "$*"; }
# Any failure not reported by die() still says where it happened.
trap 'rc=$?; printf "\nsetup: ERROR: line %s failed (exit %s): %s\n" "$LINENO" "$rc" "$BASH_COMMAND" >&2' ERR
die() {
    printf '\nsetup: ERROR: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf '  %s\n' "$line" >&2; done
    exit 1
}

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

check_toolchain() {
    PY="${QVLA_PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
    [[ -n "$PY" ]] || die "no python3 found" "install CPython 3.11 (Debian 12: apt-get install python3 python3-venv python3-dev)"
    local ver
    ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [[ "$ver" == "3.11" ]] || die "Python 3.11 is required (the ROS 2 Kilted wheels are cp311); $PY is $ver" \
        "set QVLA_PYTHON=/path/to/python3.11"
    "$PY" -c 'import venv, ensurepip' 2>/dev/null || die "$PY lacks venv/ensurepip" "Debian: apt-get install python3.11-venv"
    "$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || die "Python headers (Python.h) are missing; the interface package compiles against them" "Debian: apt-get install python3.11-dev"
    command -v cc >/dev/null || die "no C compiler (cc) found; rosidl compiles the message typesupport" "Debian: apt-get install build-essential"
    command -v c++ >/dev/null || die "no C++ compiler (c++) found" "Debian: apt-get install build-essential"
    command -v cmake >/dev/null || die "CMake not found; ament_cmake needs >= 3.16" "Debian: apt-get install cmake"
    command -v make >/dev/null || die "make not found" "Debian: apt-get install make"
}

# pip's own error names the requirement; pull it out so the message says which package failed.
pip_install() {
    local log="$VENV/pip-install.log"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input "$@" >"$log" 2>&1; then
        local pkg
        pkg="$(grep -oE "(No matching distribution found for|Could not find a version that satisfies the requirement|Failed to build|Failed building wheel for|Cannot install) [^ ]+" "$log" | head -1 | awk '{print $NF}')"
        die "pip could not install ${pkg:-a package} (pip $*)" "last lines of $log:" "$(grep -v '^WARNING: Location' "$log" | tail -n 15)"
    fi
}

# The message wheels were built in a manylinux container; their exported CMake targets point at
# /opt/python/cp311-cp311. Rewrite those paths inside the venv (no root, no symlinks in /opt).
patch_cmake_paths() {
    local inc site
    inc="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    { grep -rlI --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true; } \
        | xargs -r sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$inc#g" \
            -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages#$site#g"
    if grep -rqI --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null; then
        die "unpatched /opt/python paths remain in the ROS wheels' CMake files" \
            "$(grep -rlI --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" | head -3)"
    fi
}

setup_venv() {
    local want
    want="$(hash_of "$REQ/lock.txt")-$TORCH_VARIANT-v$VENV_LAYOUT"
    if [[ -f "$VENV/.qvla-ready" && "$(cat "$VENV/.qvla-ready")" == "$want" ]]; then
        say "venv up to date ($VENV)"
        return
    fi
    rm -f "$VENV/.qvla-ready"
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        say "updating $VENV to requirements/lock.txt"
    else
        say "creating $VENV (ROS 2 Kilted wheels, torch $TORCH_VERSION/$TORCH_VARIANT, transformers); takes a few minutes"
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
    fi
    if [[ "$TORCH_VARIANT" == "cuda" ]]; then
        # PyPI's Linux torch wheel is the CUDA build; skip the local CPU file.
        PIP_FIND_LINKS="" pip_install "torch==$TORCH_VERSION"
    else
        pip_install "torch==$TORCH_VERSION"
    fi
    pip_install -r "$REQ/lock.txt"
    touch "$VENV/COLCON_IGNORE"  # the ROS wheels put package.xml files under .venv/share
    patch_cmake_paths
    "$VENV/bin/python" -c 'import rclpy, torch, transformers, cv2, yaml, pydantic' \
        || die "the new venv cannot import its core packages" "see the traceback above"
    echo "$want" >"$VENV/.qvla-ready"
}

ensure_render_libs() {
    [[ "${QVLA_SKIP_RENDER_LIBS:-0}" == "1" ]] && return
    if ldconfig -p | grep -q 'libEGL.so.1' && ldconfig -p | grep -q 'libOpenGL.so.0' \
        && ls /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so >/dev/null 2>&1; then
        return
    fi
    local pkgs="libegl1 libopengl0 libgl1-mesa-dri"
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
        say "installing offscreen-rendering libraries for the MuJoCo demo: $pkgs"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs) >/tmp/qvla-apt.log 2>&1 \
            || die "apt-get could not install $pkgs" "$(tail -n 10 /tmp/qvla-apt.log)"
    else
        die "offscreen rendering needs $pkgs" "run: sudo apt-get install -y $pkgs  (or QVLA_SKIP_RENDER_LIBS=1 to skip the demo's sim)"
    fi
}

# colcon build into install/ against the venv's ROS 2; $1 names what is built, the rest go to colcon.
colcon_build() {
    local what="$1"
    shift
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    if ! (cd "$ROOT" && colcon build "$@" --event-handlers console_cohesion- status- summary+ \
        --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >"$ROOT/log/colcon-build.out" 2>&1); then
        local failed
        failed="$(grep -oE 'Failed +<<< [a-z_]+' "$ROOT/log/colcon-build.out" | awk '{print $3}' | head -1)"
        die "colcon build of $what failed in package ${failed:-?}" "log: $ROOT/log/latest_build/${failed:-}/stdout_stderr.log" \
            "$(tail -n 25 "$ROOT/log/latest_build/${failed:-}/stdout_stderr.log" 2>/dev/null || tail -n 25 "$ROOT/log/colcon-build.out")"
    fi
}

build_workspace() {
    local want
    # Inputs of the build: the venv and every source file (symlinked launch/ and config/ included).
    want="$(cd "$ROOT" && { cat "$VENV/.qvla-ready"; find src launch config models colcon.meta -type f \
        ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)"
    if [[ -f "$ROOT/install/.qvla-ready" && "$(cat "$ROOT/install/.qvla-ready")" == "$want" ]]; then
        say "workspace up to date ($ROOT/install)"
        return
    fi
    rm -f "$ROOT/install/.qvla-ready"
    say "colcon build (qvla_msgs, qvla_core, qvla_ros)"
    colcon_build "qvla packages" --base-paths src
    for exe in policy_node; do
        [[ -x "$ROOT/install/qvla_ros/lib/qvla_ros/$exe" ]] || die "colcon finished but install/qvla_ros/lib/qvla_ros/$exe is missing"
    done
    echo "$want" >"$ROOT/install/.qvla-ready"
}

# EXTRAS = the ros2-extras folder: the one QVLA_ROS2_EXTRAS names, else shared/ beside the checkout
# (where developers and CI have it), else shared/ inside it (where the device machine has it); empty
# if none. Run before the long steps, so a wrong QVLA_ROS2_EXTRAS fails at once.
EXTRAS=""
find_ros2_extras() {
    if [[ -n "${QVLA_ROS2_EXTRAS:-}" ]]; then
        [[ -d "$QVLA_ROS2_EXTRAS/wheels" && -d "$QVLA_ROS2_EXTRAS/src/composition_interfaces" ]] \
            || die "QVLA_ROS2_EXTRAS=$QVLA_ROS2_EXTRAS is not a ros2-extras folder (wheels/ + src/composition_interfaces)" \
                "point it at one, or unset it to use ../shared/ros2-extras"
        EXTRAS="$(cd "$QVLA_ROS2_EXTRAS" && pwd)"
        return
    fi
    local dir
    for dir in "$ROOT/../shared/ros2-extras" "$ROOT/shared/ros2-extras"; do
        if [[ -d "$dir/wheels" ]]; then
            EXTRAS="$(cd "$dir" && pwd)"
            return
        fi
    done
}

# Test-time tools, never shipped (a robot's distribution has them): the wheels into the venv, and
# composition_interfaces (launch_ros imports it; not on PyPI) built into install/ beside our packages,
# so install/setup.bash (and scripts/env.sh) pick it up. Each part is stamped in what it installs
# into, so a rebuilt venv or a removed install/ redoes only its part.
setup_ros2_extras() {
    local extras="$EXTRAS"
    if [[ -z "$extras" ]]; then
        say "no ros2-extras folder (../shared/ros2-extras, shared/ros2-extras or QVLA_ROS2_EXTRAS):" \
            "tests of ros2 launch / ros2 CLI will skip${CI:+ (CI=true: they fail)}"
        return
    fi
    local want_pip want_build
    want_pip="$(cat "$VENV/.qvla-ready")-$(hash_of "$REQ/ros2-extras.txt" "$extras"/wheels/*.whl)"
    if [[ -f "$VENV/.qvla-ros2-extras-ready" && "$(cat "$VENV/.qvla-ros2-extras-ready")" == "$want_pip" ]]; then
        say "ROS 2 test tools up to date ($extras)"
    else
        rm -f "$VENV/.qvla-ros2-extras-ready"
        say "installing the ROS 2 test tools (launch, launch_ros, ros2cli) from $extras"
        pip_install -r "$REQ/ros2-extras.txt"
        # --no-deps: the wheels name ament_index_python, which the ROS wheels provide as ros-ament-index-python
        pip_install --no-deps --force-reinstall "$extras"/wheels/*.whl
        echo "$want_pip" >"$VENV/.qvla-ros2-extras-ready"
    fi
    # every interface package under src/ is built (composition_interfaces for launch_ros, nav2_msgs for
    # the Nav2 outputs' tests), so the stamp covers them all
    want_build="$(cat "$VENV/.qvla-ready")-$(cd "$extras/src" && find . -type f -print0 \
        | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
    if [[ -f "$ROOT/install/.qvla-ros2-extras-ready" \
        && "$(cat "$ROOT/install/.qvla-ros2-extras-ready")" == "$want_build" ]]; then
        return
    fi
    rm -f "$ROOT/install/.qvla-ros2-extras-ready"
    say "colcon build $(ls "$extras/src" | tr '\n' ' ')(test-time interface packages)"
    colcon_build "ros2-extras interfaces" --base-paths "$extras/src"
    "$VENV/bin/python" - "$ROOT" <<'PY' || die "the ROS 2 test tools do not import" "see the traceback above"
import os, subprocess, sys
# The built interface package, as install/setup.bash would give it; then the real imports.
root = sys.argv[1]
site = os.path.join(root, "install", "composition_interfaces", "lib", "python3.11", "site-packages")
env = dict(os.environ, PYTHONPATH=site + os.pathsep + os.environ.get("PYTHONPATH", ""))
code = "import launch_ros.actions, ros2cli.cli, ros2launch, ros2lifecycle, ros2param, rosidl_runtime_py"
sys.exit(subprocess.run([sys.executable, "-c", code], env=env).returncode)
PY
    echo "$want_build" >"$ROOT/install/.qvla-ros2-extras-ready"
}

mkdir -p "$ROOT/log"
if [[ "$TEST_TOOLS" == "1" ]]; then find_ros2_extras; fi
check_toolchain
setup_venv
ensure_render_libs
build_workspace
if [[ "$TEST_TOOLS" == "1" ]]; then setup_ros2_extras; fi
say "ready: source scripts/env.sh to use the workspace"
