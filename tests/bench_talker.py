"""Test helper process for tests/test_ros_bench.py: publishes numbered messages, then waits to be stopped.

Publishes ``count`` ``geometry_msgs/TwistStamped`` on ``/cf1/cmd_vel`` (RELIABLE) and ``count``
``nav_msgs/Odometry`` on ``/cf1/odom`` (BEST_EFFORT) at ``rate_hz``. Message ``i`` carries
``header.stamp = (i s, i us)``, ``twist.linear.x = i`` and ``pose.position.x = i / 2``. It waits until both
topics have a subscriber first, prints ``published <count>`` when done and spins until SIGINT/SIGTERM.

Usage: ``python tests/bench_talker.py COUNT RATE_HZ``.
"""

import sys
import time

import rclpy
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy

SUBSCRIBER_TIMEOUT_S = 60.0


def main() -> None:
    count, rate_hz = int(sys.argv[1]), float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("bench_talker")
    try:
        cmd = node.create_publisher(TwistStamped, "/cf1/cmd_vel", QoSProfile(depth=count))
        odom = node.create_publisher(
            Odometry, "/cf1/odom", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        deadline = time.monotonic() + SUBSCRIBER_TIMEOUT_S
        while cmd.get_subscription_count() == 0 or odom.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                sys.exit("no subscriber on /cf1/cmd_vel and /cf1/odom")
            time.sleep(0.05)
        for i in range(count):
            twist, pose = TwistStamped(), Odometry()
            for msg in (twist, pose):
                msg.header.stamp.sec, msg.header.stamp.nanosec = i, i * 1000
            twist.twist.linear.x = float(i)
            pose.pose.pose.position.x = i / 2
            cmd.publish(twist)
            odom.publish(pose)
            time.sleep(1.0 / rate_hz)
        print(f"published {count}", flush=True)
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():  # else spin raced with the signal's shutdown (see s2r_ros.executor.spin_until_shutdown)
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
