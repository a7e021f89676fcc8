"""ros2 launch qvla_ros aloha.launch.py [robot_config:=...] [checkpoint:=...] ...

Thin on purpose: the arguments and the nodes come from qvla_ros.tools.bringup (tested Python).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription
from qvla_ros.tools.bringup import LAUNCH_ARGUMENTS, policy_node_spec, to_launch_actions


def _nodes(context):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    config_dir = Path(get_package_share_directory("qvla_ros")) / "config" / "robots"
    return to_launch_actions([policy_node_spec(values, config_dir, default_robot="aloha")])


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
            for a in LAUNCH_ARGUMENTS
        ]
        + [OpaqueFunction(function=_nodes)]
    )
