"""sim2real ROS 2 test bench nodes."""
