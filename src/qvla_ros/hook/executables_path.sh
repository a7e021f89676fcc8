# This package's executables on PATH once the workspace is sourced (ros2 run finds them in lib/qvla_ros too).
_colcon_prepend_unique_value PATH "$COLCON_CURRENT_PREFIX/lib/qvla_ros"
