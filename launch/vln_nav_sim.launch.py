"""ros2 launch qvla_ros vln_nav_sim.launch.py [policy:=expert_vln_nav] [checkpoint:=...] [seed:=N] ...

The navigation sim (a MuJoCo mobile base publishing a camera, /odom and /clock, following the
policy's waypoints the way Nav2's controller would) and the policy node on sim time, for the vln_nav
robot. On a real robot use vln_nav.launch.py (Nav2 follows the waypoints there). Thin on purpose:
the arguments and the nodes come from qvla_ros.tools.bringup (tested Python).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription
from qvla_ros.tools.bringup import LAUNCH_ARGUMENTS, NAV_SIM_ARGUMENTS, nav_sim_demo_specs, to_launch_actions

ARGUMENTS = (*LAUNCH_ARGUMENTS, *NAV_SIM_ARGUMENTS)


def _nodes(context):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
    config_dir = Path(get_package_share_directory("qvla_ros")) / "config" / "robots"
    return to_launch_actions(nav_sim_demo_specs(values, config_dir))


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)]
    )
