"""The bridge's QoS profiles, shared by its nodes so that publishers and subscribers always match."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

#: sensor publishers: best-effort, a frame or two of history (a lost frame is replaced by the next)
SENSOR_PUB = QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT)
#: sensor subscribers: best-effort, depth 1, so a slow reader sees the newest frame, not a backlog
SENSOR_SUB = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
#: one-off state (instruction, episode, metrics): reliable and transient-local, so late joiners get it
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: events that must all arrive in order (the agent's actions)
EVENTS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
#: /cmd_vel subscriber: best-effort matches both reliable and best-effort drivers
CMD_SUB = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
