from glob import glob

from setuptools import find_packages, setup

package_name = "qvla_core"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        # colcon.pkg names this hook: sourcing the workspace puts lib/<package> (the tools) on PATH.
        ("share/" + package_name + "/hook", glob("hook/executables_path.*")),
    ],
    install_requires=["setuptools", "numpy", "pyyaml", "pydantic"],
    zip_safe=True,
    maintainer="qvla maintainers",
    maintainer_email="maintainers@qvla.dev",
    description="Transport-free core of qvla (policy, prompts, embodiment, chunking, safety).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "qvla-schema = qvla_core.cli.schema:main",
            "qvla-build-checkpoint = qvla_core.cli.build_checkpoint:main",
            "qvla-prompt = qvla_core.cli.prompt:main",
            "qvla-convert = qvla_core.cli.convert:main",
            "qvla-train = qvla_core.cli.train:main",
        ],
    },
)
