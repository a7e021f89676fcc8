"""ros2 launch qvla_ros aloha_sim.launch.py [policy:=expert_transfer_cube] [checkpoint:=...] ...

The MuJoCo ALOHA (sim node, publishing /clock) and the policy node on sim time. Thin on purpose: the
arguments and the nodes come from qvla_ros.tools.bringup (tested Python).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription
from qvla_ros.tools.bringup import LAUNCH_ARGUMENTS, SIM_ARGUMENTS, sim_demo_specs, to_launch_actions

ARGUMENTS = (*LAUNCH_ARGUMENTS, *SIM_ARGUMENTS)


def _nodes(context):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
    config_dir = Path(get_package_share_directory("qvla_ros")) / "config" / "robots"
    return to_launch_actions(sim_demo_specs(values, config_dir))


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)]
    )
