"""The simulator layer: scenes, sensors, navigation, backends (and, later, the VLN-CE task and envs).

Coordinates follow Habitat: metres, y up, the agent looks along -z at heading 0, rotations are
unit quaternions in (x, y, z, w) order.
"""
