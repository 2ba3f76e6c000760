"""The ROS 2 test bench, ROS-free side: the process launcher for one bench run and the metrics read from its bag.

The nodes themselves live in ``ros2_ws/src/s2r_bench``; nothing here imports rclpy.
"""
