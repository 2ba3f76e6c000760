"""sim2real ROS 2 nodes: thin adapters between ROS 2 messages and the ROS-free core in ``sim2real.deploy``."""
