"""ROS 2 bridge: the simulator as a ROS 2 robot, our agents on any ROS 2 robot, recording, benchmarks.

Only this package imports rclpy. ``frames`` and ``control`` are plain Python (testable without
ROS); ``messages`` converts numpy to and from ROS messages; ``sim_node``, ``agent_node`` and
``record`` are thin nodes over library code; ``dds`` keeps DDS on loopback unless told otherwise.
"""
