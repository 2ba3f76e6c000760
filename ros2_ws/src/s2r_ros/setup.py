"""ament_python package s2r_ros: installs with `colcon build` (distro ROS 2) and with `pip install` (wheels)."""

from glob import glob

from setuptools import setup

PACKAGE = "s2r_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="sim2real ROS 2 nodes: exported drone policies on robots, with a failsafe",
    license="MIT",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
    ],
    install_requires=["sim2real"],
    zip_safe=True,
    entry_points={"console_scripts": ["policy_node = s2r_ros.policy_node:main"]},
)
