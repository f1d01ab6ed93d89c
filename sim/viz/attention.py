"""Where a policy read the instruction: its attention over the words at each step, as a picture.

Rows are the instruction's words in order, columns the episode's steps; a cell is dark where the
policy attended to that word at that step. An instruction pointer's estimate of the agent's place
in the instruction is drawn as a red line, and the actions taken run along the bottom.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from sim.actions import Action
from sim.viz.topdown import _font

ACTION_COLOURS = {Action.STOP: (20, 20, 20), Action.MOVE_FORWARD: (170, 170, 170),
                  Action.TURN_LEFT: (40, 160, 60), Action.TURN_RIGHT: (230, 130, 20)}
POINTER_COLOUR = (220, 30, 30)
ROW_PX, LABEL_PX, ACTION_PX, TITLE_PX = 12, 120, 10, 18


def attention_figure(words: list[str], attention: np.ndarray, actions: list[int] | None = None,
                     pointer: np.ndarray | None = None, title: str = "", step_px: int | None = None) -> Image.Image:
    """A words x steps heat map of instruction attention.

    Args:
        words: the L instruction tokens, in order (row labels).
        attention: (T, L) weights per step, each row summing to one over the words.
        actions: the T actions taken (``sim.actions.Action`` values), drawn as a strip of colours.
        pointer: (T,) estimated place in the instruction in [0, 1] (0: first word, 1: last).
        title: a line above the map.
        step_px: pixels per step; by default as wide as fits 900 pixels (2 to 8).

    Returns:
        An RGB image of width LABEL_PX + T * step_px and height TITLE_PX + L * ROW_PX
        (+ ACTION_PX with ``actions``). A cell's darkness is its weight over the largest weight
        of the episode, so a spread-out attention shows pale and a peaked one dark.
    """
    a = np.asarray(attention, np.float32)
    if a.ndim != 2 or a.shape[1] != len(words):
        raise ValueError(f"attention must be (steps, {len(words)} words), got shape {a.shape}")
    t, n = a.shape
    if actions is not None and len(actions) != t:
        raise ValueError(f"{len(actions)} actions for {t} steps of attention")
    if pointer is not None and np.asarray(pointer).shape != (t,):
        raise ValueError(f"pointer must have one place per step ({t},), got shape {np.asarray(pointer).shape}")
    step_px = step_px or int(np.clip(900 // max(t, 1), 2, 8))
    width, top = LABEL_PX + t * step_px, TITLE_PX
    height = top + n * ROW_PX + (ACTION_PX if actions is not None else 0)
    shade = a.T / max(float(a.max()), 1e-12)  # (L, T) in [0, 1]
    # white (0) to dark blue (1), one cell of step_px x ROW_PX per weight
    cells = (np.array([255, 255, 255], np.float32) * (1 - shade[..., None])
             + np.array([20, 40, 140], np.float32) * shade[..., None]).astype(np.uint8)
    cells = cells.repeat(ROW_PX, 0).repeat(step_px, 1)
    img = Image.new("RGB", (width, height), "white")
    img.paste(Image.fromarray(cells), (LABEL_PX, top))
    draw = ImageDraw.Draw(img)
    font = _font(10)
    for i, w in enumerate(words):
        draw.text((LABEL_PX - 4, top + i * ROW_PX + ROW_PX // 2), w[:18], fill=(30, 30, 30), font=font, anchor="rm")
    if pointer is not None:
        # place p sits on the centre of word p * (L - 1), as the pointer's prior does
        ys = top + np.asarray(pointer, np.float32) * (n - 1) * ROW_PX + ROW_PX / 2
        xs = LABEL_PX + (np.arange(t) + 0.5) * step_px
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=POINTER_COLOUR, width=2)
    if actions is not None:
        y0 = top + n * ROW_PX
        for k, act in enumerate(actions):
            x0 = LABEL_PX + k * step_px
            draw.rectangle([x0, y0, x0 + step_px - 1, y0 + ACTION_PX - 1], fill=ACTION_COLOURS[Action(int(act))])
        draw.text((LABEL_PX - 4, y0 + ACTION_PX // 2), "action", fill=(30, 30, 30), font=font, anchor="rm")
    if title:
        draw.text((4, TITLE_PX // 2), title, fill=(0, 0, 0), font=font, anchor="lm")
    return img
