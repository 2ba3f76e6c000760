"""Launch the sim2real policy node on a robot with distro ROS 2 (needs `launch` and `launch_ros`).

    ros2 launch s2r_ros policy.launch.py bundle:=/path/to/bundle [params:=/path/to/params.yaml]

The parameters file defaults to the package's config/policy.yaml; the bundle's own policy_node.yaml can be
given instead. The pip-wheel dev setup has no `launch` package: run `policy_node` there directly
(ros2_ws/README.md).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = str(Path(get_package_share_directory("s2r_ros")) / "config" / "policy.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument("bundle", description="exported bundle directory (sim2real export)"),
            DeclareLaunchArgument("params", default_value=default_params, description="policy_node parameters"),
            Node(
                package="s2r_ros",
                executable="policy_node",
                name="policy_node",
                output="screen",
                parameters=[LaunchConfiguration("params"), {"bundle": LaunchConfiguration("bundle")}],
            ),
        ]
    )
