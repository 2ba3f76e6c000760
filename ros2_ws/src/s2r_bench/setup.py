"""ament_python package of the sim2real test bench (colcon build, or pip install for dev and CI)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "s2r_bench"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools", "rosbags"],
    zip_safe=True,
    maintainer="sim2real",
    maintainer_email="sim2real@example.com",
    description="sim2real ROS 2 test bench nodes: sim bridge, perturbation node, recorder (rosbag2 MCAP).",
    license="MIT",
    entry_points={
        "console_scripts": [
            "s2r_bench_recorder = s2r_bench.recorder_node:main",
            "sim_bridge = s2r_bench.sim_bridge_node:main",
            "perturbation_node = s2r_bench.perturbation_node:main",
        ]
    },
)
