"""Gymnasium environments (registered on ``import sim``: ``gymnasium.make("sim:VLNCE-v0")``)."""
