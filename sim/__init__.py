"""The simulator layer: scenes, sensors, navigation, backends (and, later, the VLN-CE task and envs).

Coordinates follow Habitat: metres, y up, the agent looks along -z at heading 0, rotations are
unit quaternions in (x, y, z, w) order.
"""


def _register_envs() -> None:
    # registration is declarative: nothing heavy is imported until gymnasium.make
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return
    if "VLNCE-v0" not in gymnasium.registry:
        gymnasium.register(id="VLNCE-v0", entry_point="sim.envs.vlnce_env:VLNCEEnv")


_register_envs()
