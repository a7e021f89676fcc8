import os
from glob import glob

from setuptools import find_packages, setup

package_name = "qvla_ros"


def tree(top: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing every file under ``top`` into share/<package>/<top>."""
    return [
        (os.path.join("share", package_name, folder), [os.path.join(folder, f) for f in files])
        for folder, _, files in os.walk(top, followlinks=True)
        if files
    ]


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        # colcon.pkg names this hook: sourcing the workspace puts lib/<package> (the tools) on PATH.
        ("share/" + package_name + "/hook", glob("hook/executables_path.*")),
        # launch/ and config/ live at the repository top level; symlinks bring them here.
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config/robots", glob("config/robots/*.yaml")),
        ("share/" + package_name + "/config", ["config/fastdds.xml"]),
        # models/ (top level, symlinked here too): the trained demo checkpoint(s).
        *tree("models"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="qvla maintainers",
    maintainer_email="maintainers@qvla.dev",
    description="ROS 2 nodes and launch files for the qvla Qwen-VLA runtime.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "policy_node = qvla_ros.nodes.policy_node:main",
            "sim_node = qvla_ros.nodes.sim_node:main",
            "nav_sim_node = qvla_ros.nodes.nav_sim_node:main",
            "qvla-demo = qvla_ros.tools.demo:main",
            "demo = qvla_ros.tools.demo:main",  # the old name, kept for scripts written against it
            "recorder_node = qvla_ros.nodes.recorder_node:main",
            "collect = qvla_ros.tools.collect:main",
            "qvla-collect = qvla_ros.tools.collect:main",
        ],
    },
)
