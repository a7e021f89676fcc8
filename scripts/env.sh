# Source this file (bash) to use the built workspace: venv + install/setup.bash + ROS settings.
# shellcheck shell=bash disable=SC1091
_qvla_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The colcon/venv scripts read unset variables: relax `set -u` while sourcing them.
case $- in *u*) _qvla_nounset=1; set +u ;; *) _qvla_nounset=0 ;; esac
source "$_qvla_root/.venv/bin/activate"
source "$_qvla_root/install/setup.bash"
[[ $_qvla_nounset == 1 ]] && set -u
unset _qvla_nounset
export AMENT_PREFIX_PATH="$_qvla_root/.venv:${AMENT_PREFIX_PATH:-}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Keep discovery on this machine unless the user says otherwise (Jazzy/Kilted setting).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# Camera-sized messages need bigger DDS transports than the defaults (see config/fastdds.xml).
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_qvla_root/config/fastdds.xml}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export QVLA_ROOT="$_qvla_root"
unset _qvla_root
