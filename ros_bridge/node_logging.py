"""Logging helpers shared by the nodes."""

from __future__ import annotations


class WarnOnce:
    """Mixin for rclpy nodes: ``self._warn_once(key, text)`` logs each kind of warning once, so a
    robot that sends the same bad message at 30 Hz does not flood the log."""

    def _warn_once(self, key: str, text: str) -> None:
        warned = self.__dict__.setdefault("_warned_keys", set())
        if key not in warned:
            warned.add(key)
            self.get_logger().warning(text + " (further warnings of this kind are suppressed)")
