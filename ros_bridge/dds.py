"""Where DDS traffic may go, set before rclpy starts, and how rclpy is found.

ROS 2 Kilted's Fast DDS multicasts discovery on the network by default and ignores
``ROS_LOCALHOST_ONLY``. Our nodes therefore confine DDS to this machine unless told otherwise:
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` plus the packaged Fast DDS profile
(``configs/ros/fastdds_loopback.xml``: UDP on 127.0.0.1 only and a 32 MiB shared-memory segment,
which large PointCloud2 messages need). On a robot, pass ``--network`` (or set
``VLNCE_ROS_NETWORK=1``) and the environment's own DDS settings are used unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlnce.errors import MissingDependencyError

PROFILE = Path(__file__).resolve().parent.parent / "configs" / "ros" / "fastdds_loopback.xml"
INSTALL_HINT = ("ROS 2's rclpy is not importable. Install the ROS 2 extra (pip install '.[ros]', which brings the "
                "ros-rclpy[fastrtps] wheels) or source a ROS 2 installation (source /opt/ros/<distro>/setup.bash).")


def loopback_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) that keeps DDS on loopback.

    Use it for every subprocess that imports rclpy (tests, launch scripts).
    """
    out = dict(os.environ if env is None else env)
    out["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    out["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    out.pop("ROS_LOCALHOST_ONLY", None)  # ignored by Kilted; its presence only misleads
    return out


def network_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("VLNCE_ROS_NETWORK", "") not in ("", "0", "false", "no")


def configure(network: bool = False) -> str:
    """Set this process's DDS environment before rclpy is initialised; returns a description."""
    if network_requested(network):
        return "DDS: using the environment's settings (network allowed)"
    os.environ.update(loopback_environment({}))
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    return f"DDS: loopback only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, profile {PROFILE})"


def import_rclpy():
    """Import rclpy, or raise ``MissingDependencyError`` naming the extra to install."""
    try:
        import rclpy
    except ImportError as exc:
        raise MissingDependencyError(INSTALL_HINT) from exc
    return rclpy
