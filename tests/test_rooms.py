"""Room-type labels (``sim.sensors.rooms``), their store arrays, and the room heads and loss."""

import math

import numpy as np
import pytest
import torch

from agents.training.store import ChunkWriter, TrajectoryStore, labelled_ce
from sim.scenes import shapes
from sim.scenes.scene import Room, scene_from_parts
from sim.scenes.semantics import ROOM_TYPES
from sim.sensors.raycast import RayCaster
from sim.sensors.rooms import RoomLabeler, room_type_at
from vlnce.errors import DatasetError

KITCHEN, BEDROOM = ROOM_TYPES.index("kitchen"), ROOM_TYPES.index("bedroom")


def _two_rooms():
    """A kitchen x in [0, 4] and a bedroom x in [4, 8] (z in [0, 4]); the wall between them, 0.1 m
    thick at x = 4 and 2.6 m high, has a full-height doorway at z in [1.4, 2.6]; the bedroom's far
    wall at x = 8 is 4 m high. No outer side walls or ceilings: rays there hit nothing."""
    parts = []
    for center, size, cat in [((4.0, -0.05, 2.0), (8.0, 0.1, 4.0), "floor"),
                              ((4.0, 1.3, 0.7), (0.1, 2.6, 1.4), "wall"),
                              ((4.0, 1.3, 3.3), (0.1, 2.6, 1.4), "wall"),
                              ((8.0, 2.0, 2.0), (0.1, 4.0, 4.0), "wall")]:
        v, f = shapes.box(center, size)
        parts.append({"vertices": v, "faces": f, "category": cat, "instance": len(parts) + 1, "color": (200, 200, 200)})
    rooms = [Room(0, "kitchen", "kitchen", (0.0, 0.0, 4.0, 4.0)), Room(1, "bedroom", "bedroom", (4.0, 0.0, 8.0, 4.0))]
    return scene_from_parts(parts, rooms=rooms)


def test_room_labels_see_through_the_doorway_into_the_next_room():
    scene = _two_rooms()
    caster = RayCaster(scene.triangles())
    # at (2, 1.8) looking along +x (heading -90 degrees, so the image's right is +z), camera 1.25 m
    # high, 90 degree HFOV; cell-centre rays leave at tan = +-0.25 and +-0.75 off the axis both ways
    here, seen = RoomLabeler()(scene, caster, np.array([2.0, 0.0, 1.8]), -math.pi / 2)
    assert here == KITCHEN
    assert seen.reshape(4, 4).tolist() == DOORWAY_VIEW
    # turned around, looking along -x: nothing but the kitchen floor below the horizon
    k, none = KITCHEN, -1
    _, back = RoomLabeler()(scene, caster, np.array([2.0, 0.0, 1.8]), math.pi / 2)
    assert back.reshape(4, 4)[3].tolist() == [k] * 4 and set(back.tolist()) <= {k, none}
    assert room_type_at(scene, 6.0, 1.0) == BEDROOM and room_type_at(scene, 9.0, 1.0) == -1


def _doorway_view():
    k, b, none = KITCHEN, BEDROOM, -1
    return [
        # top row rises 0.75 m per metre: 2.71 m high at the partition (over it) and 5.7 m at the far wall
        [none, none, none, none],
        # only the third column passes the partition inside the doorway (z = 1.8 + 0.51 m) and reaches
        # the bedroom's far wall (2.74 m high there); the others hit the partition at z = 1.8 - 0.49,
        # 1.8 -+ 1.46 m
        [k, k, b, k],
        # descending 0.25 m per metre: the third column reaches the bedroom floor at 5 m
        [k, k, b, k],
        # descending 0.75 m per metre: the kitchen floor at 1.67 m
        [k, k, k, k],
    ]


# at (2, 1.8) in the kitchen looking along +x, the 4 x 4 cells' room types (derived above)
DOORWAY_VIEW = _doorway_view()


def test_room_sensors_of_the_simulator_render_the_same_labels(tmp_path):
    from sim.backends.embedded import EmbeddedSimulator
    from sim.config import CameraSensorConfig, load_simulator_config
    from sim.geometry import quat_from_heading

    cfg = load_simulator_config(overrides={"cache_dir": str(tmp_path)})
    cfg.sensors = {"rooms": CameraSensorConfig(type="rooms", width_px=4, height_px=4),
                   "room": CameraSensorConfig(type="room", width_px=1, height_px=1),
                   "rgb": CameraSensorConfig(type="rgb", width_px=8, height_px=8)}
    sim = EmbeddedSimulator(cfg, scene=_two_rooms())
    space = sim.observation_space
    assert space["rooms"].shape == (4, 4) and space["room"].shape == (1, 1) and space["rooms"].dtype == np.int32
    assert space["rooms"].low.min() == -1 and space["rooms"].high.max() == len(ROOM_TYPES) - 1
    sim.set_start_state([2.0, 0.0, 1.8], quat_from_heading(-math.pi / 2))
    obs = sim.reset()
    assert obs["rooms"].tolist() == DOORWAY_VIEW and obs["room"].tolist() == [[KITCHEN]]
    assert obs["rgb"].shape == (8, 8, 3) and space.contains(obs)
    sim.set_start_state([6.0, 0.0, 2.0], quat_from_heading(-math.pi / 2))
    obs = sim.reset()  # in the bedroom facing its far wall, 2 m off: the bedroom everywhere but the sky
    assert obs["room"].tolist() == [[BEDROOM]] and set(obs["rooms"].ravel().tolist()) <= {BEDROOM, -1}
    assert (obs["rooms"][2:] == BEDROOM).all()


def test_room_labels_policy_reads_the_sensors_as_one_hot_inputs():
    from agents.models import PolicyConfig, build_policy
    from vlnce.errors import ConfigError

    vocab = ["<PAD>", "<UNK>", "a", "b"]
    cfg = PolicyConfig(arch="cma", vocab_size=4, rgb_size=16, depth_size=16, hidden=32, instruction_hidden=16,
                       rgb_channels=8, depth_channels=8, rgb_dim=16, depth_dim=16, room_labels=True)
    torch.manual_seed(0)
    p = build_policy(cfg, vocab).eval()
    sensors = p.cfg.sensors()
    assert sensors["rooms"]["type"] == "rooms" and (sensors["rooms"]["width_px"], sensors["rooms"]["height_px"]) == (4, 4)
    assert sensors["room"]["type"] == "room" and sensors["rooms"]["hfov_deg"] == sensors["rgb"]["hfov_deg"]
    rgb1, depth1 = torch.zeros(1, 16, 16, 3, dtype=torch.uint8), torch.zeros(1, 16, 16, 1)
    cells = torch.tensor([[-1] * 15 + [BEDROOM]])
    vis = p.encode_visual(rgb1, depth1, 1, (torch.tensor([KITCHEN]), cells))
    assert vis["room_here"].tolist() == [[float(i == KITCHEN) for i in range(len(ROOM_TYPES))]]
    assert (vis["room_cells"][0, :15] == 0).all() and vis["room_cells"][0, 15].argmax() == BEDROOM
    assert vis["room_cells"][0, 15].sum() == 1
    # acting step by step from observations gives the teacher-forced unroll's logits
    g = torch.Generator().manual_seed(1)
    t = 4
    tokens = torch.tensor([[2, 3, 0]])
    rgb = torch.randint(0, 255, (1, t, 16, 16, 3), dtype=torch.uint8, generator=g)
    depth = torch.rand(1, t, 16, 16, 1, generator=g)
    prev = torch.tensor([[-1, 1, 2, 1]])
    here = torch.randint(-1, len(ROOM_TYPES), (1, t), generator=g)
    seen = torch.randint(-1, len(ROOM_TYPES), (1, t, 16), generator=g)
    with torch.no_grad():
        logits = p.forward_sequence(tokens, rgb, depth, prev, rooms=(here, seen))[0]
        instr, state = p.encode_instruction(tokens), p.initial_state(1)
        for i in range(t):
            obs = {"rgb": rgb[0, i].numpy(), "depth": depth[0, i].numpy(), "room": here[0, i].reshape(1, 1).numpy(),
                   "rooms": seen[0, i].reshape(4, 4).numpy()}
            step, _, state, _ = p.act(instr, *p.frame_inputs(obs), prev[:, i], state, rooms=p.room_inputs(obs))
            torch.testing.assert_close(step, logits[:, i])
        # the labels are an input: other rooms, other actions' logits
        other = p.forward_sequence(tokens, rgb, depth, prev, rooms=((here + 1) % len(ROOM_TYPES), seen))[0]
    assert not torch.allclose(other, logits)
    with pytest.raises(ValueError, match="room-type sensors"):
        p.forward_sequence(tokens, rgb, depth, prev)
    with pytest.raises(ValueError, match="a robot cannot run it"):
        p.room_inputs({"rgb": rgb[0, 0].numpy(), "depth": depth[0, 0].numpy()})
    with pytest.raises(ValueError, match="expected 1 .'room'. and 16"):
        p.encode_visual(rgb1, depth1, 1, (torch.tensor([KITCHEN]), torch.zeros(1, 9, dtype=torch.long)))
    assert build_policy(PolicyConfig(**{**cfg.__dict__, "room_labels": False}), vocab).room_inputs(obs) is None
    for bad in ({"arch": "seq2seq"}, {"room_sense": True}):
        with pytest.raises(ConfigError, match="room_labels"):
            PolicyConfig(**{**cfg.__dict__, **bad}).validate()


def test_store_keeps_room_labels_and_reads_old_chunks_as_unlabelled(tmp_path):
    frames = [{"rgb": np.zeros((8, 8, 3), np.uint8), "depth": np.zeros((8, 8, 1), np.float32)}] * 3
    w = ChunkWriter(tmp_path, "0000_train_00", (8, 8, 3), (8, 8, 1))
    views = np.arange(48).reshape(3, 16) % 7
    w.add_episode("a", 0, [2, 3], frames, [1, 1, 0], [-1, 1, 1], [0, 0.5, 1], rooms=[2, 2, 4], view_rooms=views)
    w.add_episode("b", 0, [2], frames[:2], [1, 0], [-1, 1], [0, 1])  # unknown rooms: -1
    w.commit()
    with pytest.raises(ValueError, match="room labels of shapes"):
        ChunkWriter(tmp_path, "x", None, None).add_episode("c", 0, [2], frames[:1], [0], [-1], [0], rooms=[1, 2])
    store = TrajectoryStore(tmp_path)
    store.check_room_labels()
    batch = store.batch([0, 1])
    assert batch["room"].tolist() == [[2, 2, 4], [-1, -1, -1]]
    assert (batch["view_rooms"][0] == views).all() and (batch["view_rooms"][1] == -1).all()
    # a chunk from before room labels existed: read as unknown, refused by the room loss
    old = tmp_path / "chunks" / "0001_train_00"
    old.mkdir()
    for name in ("rgb.npy", "depth.npy", "steps.npy", "tokens.npy", "episodes.json"):
        (old / name).write_bytes((tmp_path / "chunks" / "0000_train_00" / name).read_bytes())
    store.reload()
    assert (store.batch([2])["room"] == -1).all()
    with pytest.raises(DatasetError, match="0001_train_00 have no room labels"):
        store.check_room_labels()


def test_labelled_ce_skips_unknown_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7, requires_grad=True)
    labels = torch.tensor([[1, -1, 6], [-1, -1, 0]])
    want = torch.nn.functional.cross_entropy(logits[labels >= 0], labels[labels >= 0])
    torch.testing.assert_close(labelled_ce(logits, labels), want)
    none = labelled_ce(logits, torch.full((2, 3), -1))
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None and (logits.grad == 0).all()


def test_mirrored_frames_keep_each_cell_labelled_with_what_it_shows():
    from agents.training.room_sense import mirror_frames

    S, side = 16, 4  # 4 x 4 cells of 4 x 4 pixels
    rng = np.random.default_rng(0)
    cells = torch.as_tensor(rng.integers(0, len(ROOM_TYPES), size=(3, side * side)))
    # each cell painted with its label, plus a left-to-right ramp inside it that a mirror must reverse
    block = cells.reshape(3, side, side).repeat_interleave(S // side, 1).repeat_interleave(S // side, 2)
    ramp = torch.arange(S) % (S // side)
    rgb = torch.stack([block * 10, block * 10 + ramp, torch.zeros_like(block)], -1).to(torch.uint8)
    depth = (block[..., None] + ramp[None, None, :, None]).to(torch.float16) / 100
    which = torch.tensor([True, False, True])
    rgb_m, depth_m, cells_m = mirror_frames(rgb, depth, cells, which)
    # what each cell shows is still its label; the ramp inside it runs the other way
    shown = rgb_m[..., 0][:, ::S // side, ::S // side].reshape(3, -1).long() // 10
    assert torch.equal(shown, cells_m)
    assert torch.equal(rgb_m[0, :, :, 1].long() - rgb_m[0, :, :, 0].long(), (S // side - 1 - ramp).expand(S, S))
    torch.testing.assert_close(depth_m[0, :, :, 0], depth[0, :, :, 0].flip(1))
    # by hand: the first row of cells read right to left; the unpicked frame and the inputs untouched
    assert cells_m[0, :side].tolist() == cells[0, :side].tolist()[::-1]
    assert torch.equal(cells_m[1], cells[1]) and torch.equal(rgb_m[1], rgb[1]) and torch.equal(depth_m[1], depth[1])
    assert not torch.equal(cells_m[0], cells[0]) and torch.equal(mirror_frames(rgb_m, depth_m, cells_m, which)[0], rgb)


def test_room_loss_weights_the_cells_that_look_through_doors():
    from agents.training.room_sense import RoomSenseConfig, room_loss
    from vlnce.errors import ConfigError

    R = len(ROOM_TYPES)
    gen = torch.Generator().manual_seed(0)
    h_logits, c_logits = torch.randn(2, R, generator=gen), torch.randn(2, 16, R, generator=gen)

    class Fixed(torch.nn.Module):
        def forward(self, rgb, depth):
            return h_logits, c_logits

    here = torch.tensor([KITCHEN, -1])
    cells = torch.full((2, 16), KITCHEN)
    cells[0, :4] = BEDROOM  # four cells of frame 0 look through a door
    cells[0, 4:6] = -1  # unlabelled
    cells[1, :3] = BEDROOM  # frame 1's room is unknown: none of its cells counts as a door
    lp_h, lp_c = h_logits.log_softmax(-1), c_logits.log_softmax(-1)
    ce_here = -lp_h[0, KITCHEN]
    ce = {(f, k): -lp_c[f, k, int(cells[f, k])] for f in range(2) for k in range(16) if cells[f, k] >= 0}
    door = {(0, k) for k in range(4)}
    for weight in (1.0, 3.0):
        num = sum(v * (weight if fk in door else 1.0) for fk, v in ce.items())
        den = len(ce) + (weight - 1.0) * len(door)
        got = room_loss(Fixed(), torch.zeros(2, 16, 16, 3), torch.zeros(2, 16, 16, 1), here, cells, weight)
        assert got.item() == pytest.approx((ce_here + num / den).item(), rel=1e-5)
    with pytest.raises(ConfigError, match="--door-weight must be > 0"):
        RoomSenseConfig(stores=("s",), door_weight=0.0).validate()


def test_room_heads_shapes_and_config():
    from agents.models import PolicyConfig, build_policy

    vocab = ["<PAD>", "<UNK>", "a", "b"]
    cfg = PolicyConfig(arch="cma", vocab_size=4, rgb_size=16, depth_size=16, hidden=32, instruction_hidden=16,
                       rgb_channels=8, depth_channels=8, rgb_dim=16, depth_dim=16, room_aux=True)
    p = build_policy(cfg, vocab)
    tokens = torch.tensor([[2, 3, 0]])
    rgb = torch.zeros(1, 5, 16, 16, 3, dtype=torch.uint8)
    depth = torch.zeros(1, 5, 16, 16, 1)
    prev = torch.tensor([[-1, 1, 1, 2, 1]])
    logits, _, rooms = p.forward_sequence(tokens, rgb, depth, prev, aux=True)
    assert logits.shape == (1, 5, 4)
    assert rooms["room"].shape == (1, 5, len(ROOM_TYPES)) and rooms["view_rooms"].shape == (1, 5, 16, len(ROOM_TYPES))
    # acting is unchanged by the heads: the same weights without them give the same actions
    plain = build_policy(PolicyConfig(**{**cfg.__dict__, "room_aux": False}), vocab)
    plain.load_state_dict({k: v for k, v in p.state_dict().items() if "room" not in k})
    torch.testing.assert_close(plain.forward_sequence(tokens, rgb, depth, prev)[0], logits)
    assert "room" not in plain.forward_sequence(tokens, rgb, depth, prev, aux=True)[2]


def test_grid_positions_let_the_attention_say_where_a_room_is():
    from agents.models import PolicyConfig, build_policy
    from agents.models.cma import grid_places, placed
    from agents.models.encoders import Attention

    places = grid_places(16)
    assert places[0].tolist() == [-0.75, -0.75] and places[3].tolist() == [0.75, -0.75]
    assert places[4].tolist() == [-0.75, -0.25] and places[15].tolist() == [0.75, 0.75]
    # a query that looks for kitchens: two kitchen cells down the left edge, the rest bedrooms
    types = torch.full((1, 16), BEDROOM)
    types[0, [0, 4]] = KITCHEN
    onehot = torch.nn.functional.one_hot(types, len(ROOM_TYPES)).float()
    attn = Attention(len(ROOM_TYPES) + 2, 1)
    with torch.no_grad():
        attn.key.weight.zero_()
        attn.key.weight[0, KITCHEN] = 50.0
    out, alpha = attn(placed(onehot, places), torch.ones(1, 1))
    assert alpha[0, [0, 4]].sum() > 0.999
    torch.testing.assert_close(out[0, -2:], torch.tensor([-0.75, -0.5]), atol=1e-3, rtol=0)
    assert out[0, KITCHEN] > 0.999  # and what it found there

    # in a policy: mirroring the room grid left to right changes nothing without places (attention
    # is blind to the order of its cells) and changes the actions' logits with them
    vocab = ["<PAD>", "<UNK>", "a", "b"]
    tokens, prev = torch.tensor([[2, 3]]), torch.tensor([[-1, 1, 2]])
    rgb, depth = torch.zeros(1, 3, 16, 16, 3, dtype=torch.uint8), torch.zeros(1, 3, 16, 16, 1)
    here = torch.full((1, 3), KITCHEN)
    seen = torch.arange(48).reshape(1, 3, 16) % len(ROOM_TYPES)
    mirrored = seen.reshape(1, 3, 4, 4).flip(-1).reshape(1, 3, 16)
    for positions in (False, True):
        torch.manual_seed(0)
        p = build_policy(PolicyConfig(arch="cma", vocab_size=4, rgb_size=16, depth_size=16, hidden=32,
                                      instruction_hidden=16, rgb_channels=8, depth_channels=8, rgb_dim=16,
                                      depth_dim=16, room_labels=True, grid_positions=positions), vocab).eval()
        with torch.no_grad():
            a = p.forward_sequence(tokens, rgb, depth, prev, rooms=(here, seen))[0]
            b = p.forward_sequence(tokens, rgb, depth, prev, rooms=(here, mirrored))[0]
        assert torch.allclose(a, b, atol=1e-6) != positions
    from agents.training.trainer import TrainConfig
    from vlnce.errors import ConfigError

    with pytest.raises(ConfigError, match=r"grid_positions needs arch cma \(it places the cells CMA attends over\), got 'seq2seq'"):
        PolicyConfig(arch="seq2seq", grid_positions=True).validate()
    with pytest.raises(ConfigError, match="--grid-positions needs --agent cma"):
        TrainConfig(agent="seq2seq", grid_positions=True).validate()


def test_room_compass_turns_with_the_agent_and_remembers_what_left_the_view():
    from agents.models import PolicyConfig, build_policy
    from agents.models.cma import COMPASS_BINS, compass_geometry
    from sim.actions import Action
    from vlnce.errors import ConfigError

    writes, bearings = compass_geometry()
    # a 90-degree view holds the bins at 0, +-15 and +-30 degrees (left positive); the one ahead
    # lies on the boundary of the two middle columns and takes half of each
    assert writes[0].tolist() == [0, 0.5, 0.5, 0] and writes[1].tolist() == [0, 1, 0, 0]
    assert writes[2].tolist() == [1, 0, 0, 0] and writes[23].tolist() == [0, 0, 1, 0]
    assert writes[22].tolist() == [0, 0, 0, 1] and writes[3:22].abs().sum() == 0  # +-45 and beyond: unseen
    torch.testing.assert_close(bearings[6], torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)  # 90 degrees left

    cfg = PolicyConfig(arch="cma", vocab_size=4, rgb_size=16, depth_size=16, hidden=32, instruction_hidden=16,
                       rgb_channels=8, depth_channels=8, rgb_dim=16, depth_dim=16, room_labels=True,
                       room_compass=True)
    p = build_policy(cfg, ["<PAD>", "<UNK>", "a", "b"]).eval()
    r = len(ROOM_TYPES)
    assert p.state_size == 2 * 32 + COMPASS_BINS * r

    def view(column_types):
        cells = torch.zeros(1, 16, r)
        for c, kind in enumerate(column_types):
            if kind >= 0:
                cells[0, c::4, kind] = 1.0  # the whole column
        return cells

    def act(a):
        return torch.tensor([int(a)])

    memory = torch.zeros(1, COMPASS_BINS, r)
    memory = p.update_compass(memory, act(-1), view([KITCHEN, -1, -1, BEDROOM]))
    assert memory[0, 2, KITCHEN] == 1 and memory[0, 22, BEDROOM] == 1 and memory.sum() == 2
    # one right turn: the kitchen, 30 degrees left, goes to 45 (bin 3, out of view) and is kept; the
    # bedroom, 30 degrees right, comes to 15 degrees right, where the view now sees no room
    memory = p.update_compass(memory, act(Action.TURN_RIGHT), view([-1, -1, -1, -1]))
    assert memory[0, 3, KITCHEN] == 1 and memory.sum() == 1
    for _ in range(3):
        memory = p.update_compass(memory, act(Action.TURN_RIGHT), view([-1, -1, -1, -1]))
    assert memory[0, 6, KITCHEN] == 1 and memory.sum() == 1  # 90 degrees left
    # forward steps do not turn it; turning back left brings the kitchen into view again, where the
    # view now says what is there
    memory = p.update_compass(memory, act(Action.MOVE_FORWARD), view([-1, -1, -1, -1]))
    assert memory[0, 6, KITCHEN] == 1
    for _ in range(4):
        memory = p.update_compass(memory, act(Action.TURN_LEFT), view([-1, BEDROOM, -1, -1]))
    assert memory[0, 2, KITCHEN] == 0 and memory[0, 1, BEDROOM] == 1 and memory[0, 0, BEDROOM] == 0.5
    # the compass is state: acting step by step matches the unrolled sequence
    g = torch.Generator().manual_seed(2)
    tokens, prev = torch.tensor([[2, 3]]), torch.tensor([[-1, 2, 2, 3, 1, 2]])
    rgb = torch.randint(0, 255, (1, 6, 16, 16, 3), dtype=torch.uint8, generator=g)
    depth = torch.rand(1, 6, 16, 16, 1, generator=g)
    here, seen = torch.randint(-1, r, (1, 6), generator=g), torch.randint(-1, r, (1, 6, 16), generator=g)
    with torch.no_grad():
        logits, _, aux = p.forward_sequence(tokens, rgb, depth, prev, aux=True, rooms=(here, seen))
        # the compass the labels build along the trajectory is the one the policy attended over
        torch.testing.assert_close(p.label_compass(prev, seen), aux["compass"])
        instr, state = p.encode_instruction(tokens), p.initial_state(1)
        for i in range(6):
            step, _, state, _ = p.act(instr, rgb[:, i], depth[:, i], prev[:, i], state, rooms=(here[:, i], seen[:, i]))
            torch.testing.assert_close(step, logits[:, i])
    # and it needs room inputs to remember
    for bad in ({"room_labels": False}, {"arch": "seq2seq", "room_labels": False}):
        with pytest.raises(ConfigError, match="room_compass (needs arch cma|remembers CMA's room inputs)"):
            PolicyConfig(**{**cfg.__dict__, **bad}).validate()
    from agents.training.trainer import TrainConfig

    with pytest.raises(ConfigError, match="--room-compass remembers CMA's room inputs: it needs --room-labels or "
                                          "--room-sense"):
        TrainConfig(room_compass=True).validate()


def test_next_room_labels_and_head():
    from agents.models import PolicyConfig, build_policy
    from agents.training.store import next_room_labels

    rooms = np.array([[2, 2, 0, 0, 0, 3, 3, -1], [1, 1, 1, 1, -1, -1, -1, -1], [4, -1, 5, 5, 5, 5, 5, 5]])
    mask = np.array([[1] * 7 + [0], [1] * 4 + [0] * 4, [1] * 8], bool)
    # from each step, the next room the path enters; none in its last room, where unknown, or padded
    # (an unknown step between two rooms is skipped over)
    assert next_room_labels(rooms, mask).tolist() == [[0, 0, 3, 3, 3, -1, -1, -1], [-1] * 8,
                                                      [5, -1, -1, -1, -1, -1, -1, -1]]
    cfg = PolicyConfig(arch="cma", vocab_size=4, rgb_size=16, depth_size=16, hidden=32, instruction_hidden=16,
                       rgb_channels=8, depth_channels=8, rgb_dim=16, depth_dim=16, next_room_head=True)
    p = build_policy(cfg, ["<PAD>", "<UNK>", "a", "b"])
    logits, _, aux = p.forward_sequence(torch.tensor([[2, 3]]), torch.zeros(1, 3, 16, 16, 3, dtype=torch.uint8),
                                        torch.zeros(1, 3, 16, 16, 1), torch.tensor([[-1, 1, 1]]), aux=True)
    assert aux["next_room"].shape == (1, 3, len(ROOM_TYPES))
    # acting is unchanged by the head: the same weights without it give the same logits
    plain = build_policy(PolicyConfig(**{**cfg.__dict__, "next_room_head": False}), ["<PAD>", "<UNK>", "a", "b"])
    plain.load_state_dict({k: v for k, v in p.state_dict().items() if not k.startswith("next_room")})
    torch.testing.assert_close(plain.forward_sequence(torch.tensor([[2, 3]]), torch.zeros(1, 3, 16, 16, 3, dtype=torch.uint8),
                                                      torch.zeros(1, 3, 16, 16, 1), torch.tensor([[-1, 1, 1]]))[0], logits)


def test_compass_grounding_loss_by_hand_and_it_teaches_the_bearing_of_the_named_room():
    from agents.models import PolicyConfig, build_policy
    from agents.models.cma import COMPASS_BINS
    from agents.training.store import compass_grounding_ce

    r = len(ROOM_TYPES)
    compass = torch.zeros(1, 3, COMPASS_BINS, r)
    compass[0, :, 2, KITCHEN] = compass[0, :, 3, KITCHEN] = 1.0  # a kitchen 30-45 degrees left
    compass[0, :, 3, BEDROOM] = 0.5  # half of bin 3 is bedroom, as when a column spans a doorway
    attention = torch.full((1, 3, COMPASS_BINS), 0.5 / 22)
    attention[0, :, 2], attention[0, :, 3] = 0.4, 0.1
    # step 0: no next room; step 1: the kitchen, in two bins alike; step 2: the bedroom, only in bin 3
    next_rooms = torch.tensor([[-1, KITCHEN, BEDROOM]])
    kitchen, bedroom = -(0.5 * math.log(0.4) + 0.5 * math.log(0.1)), -math.log(0.1)
    assert compass_grounding_ce(attention, compass, next_rooms).item() == pytest.approx((kitchen + bedroom) / 2)
    # a next room the compass has not seen yet is not supervised; nothing supervised: 0
    assert compass_grounding_ce(attention, compass, torch.tensor([[-1, KITCHEN, 5]])).item() == pytest.approx(kitchen)
    assert compass_grounding_ce(attention, compass, torch.tensor([[-1, 5, 5]])).item() == 0.0

    # the loss alone teaches the policy where the room the instruction names lies: one view with a
    # kitchen in its left column (bin 2, 30 degrees left) and a bedroom in its right one (bin 22);
    # word "a" names the kitchen, "b" the bedroom
    cfg = PolicyConfig(arch="cma", vocab_size=4, rgb_size=16, depth_size=16, hidden=32, instruction_hidden=16,
                       rgb_channels=8, depth_channels=8, rgb_dim=16, depth_dim=16, room_labels=True,
                       room_compass=True)
    torch.manual_seed(0)
    p = build_policy(cfg, ["<PAD>", "<UNK>", "a", "b"])
    seen = torch.full((2, 1, 16), -1)
    seen[:, 0, 0::4], seen[:, 0, 3::4] = KITCHEN, BEDROOM
    inputs = (torch.tensor([[2], [3]]), torch.zeros(2, 1, 16, 16, 3, dtype=torch.uint8), torch.zeros(2, 1, 16, 16, 1),
              torch.full((2, 1), -1))
    named = torch.tensor([[KITCHEN], [BEDROOM]])
    opt = torch.optim.Adam(p.parameters(), lr=0.03)
    for _ in range(60):
        aux = p.forward_sequence(*inputs, aux=True, rooms=(torch.full((2, 1), -1), seen))[2]
        assert aux["compass"][0, 0, 2, KITCHEN] == 1 and aux["compass"][0, 0, 22, BEDROOM] == 1
        loss = compass_grounding_ce(aux["compass_attention"], aux["compass"], named)
        opt.zero_grad()
        loss.backward()
        opt.step()
    alpha = aux["compass_attention"].detach()
    assert alpha[0, 0, 2] > 0.8 and alpha[1, 0, 22] > 0.8


def test_compass_readout_starts_at_zero_adds_the_gated_map_and_learns_to_turn_toward_the_named_room():
    from agents.models import PolicyConfig, build_policy
    from agents.training.store import compass_grounding_ce
    from sim.actions import Action
    from vlnce.errors import ConfigError

    vocab = ["<PAD>", "<UNK>", "a", "b"]
    cfg = PolicyConfig(arch="cma", vocab_size=4, rgb_size=16, depth_size=16, hidden=32, instruction_hidden=16,
                       rgb_channels=8, depth_channels=8, rgb_dim=16, depth_dim=16, room_labels=True,
                       room_compass=True)
    torch.manual_seed(0)
    plain = build_policy(cfg, vocab).eval()
    p = build_policy(PolicyConfig(**{**cfg.__dict__, "compass_readout": True}), vocab).eval()
    missing, unexpected = p.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["compass_gate.bias", "compass_gate.weight", "compass_readout.weight"] and not unexpected

    # word "a" names the kitchen, "b" the bedroom; in layout 0 the kitchen fills the view's left
    # column (bin 2, 30 degrees left) and the bedroom its right one (bin 22), in layout 1 the reverse
    seen = torch.full((4, 1, 16), -1)
    seen[0::2, 0, 0::4], seen[0::2, 0, 3::4] = KITCHEN, BEDROOM
    seen[1::2, 0, 0::4], seen[1::2, 0, 3::4] = BEDROOM, KITCHEN
    inputs = (torch.tensor([[2], [2], [3], [3]]), torch.zeros(4, 1, 16, 16, 3, dtype=torch.uint8),
              torch.zeros(4, 1, 16, 16, 1), torch.full((4, 1), -1))
    rooms = (torch.full((4, 1), -1), seen)
    with torch.no_grad():
        base = plain.forward_sequence(*inputs, rooms=rooms)[0]
        grown, _, aux = p.forward_sequence(*inputs, aux=True, rooms=rooms)
        torch.testing.assert_close(grown, base)  # W_c = 0: the same policy
        # by hand: a constant gate and "turn toward the bins attended" as W_c
        p.compass_gate.weight.zero_()
        p.compass_gate.bias.fill_(math.log(3.0))  # sigmoid = 0.75
        left, right = torch.arange(1, 12), torch.arange(13, 24)
        p.compass_readout.weight[Action.TURN_LEFT, left] = 2.0
        p.compass_readout.weight[Action.TURN_RIGHT, right] = 2.0
        logits = p.forward_sequence(*inputs, rooms=rooms)[0]
        alpha = aux["compass_attention"]
        added = torch.zeros_like(logits)
        added[..., Action.TURN_LEFT] = 0.75 * 2.0 * 24 * alpha[..., left].sum(-1)  # against an even spread
        added[..., Action.TURN_RIGHT] = 0.75 * 2.0 * 24 * alpha[..., right].sum(-1)
        torch.testing.assert_close(logits, base + added)
    assert not torch.allclose(base, logits)

    # the readout alone, on a frozen policy whose compass attention was grounded, learns to turn
    # toward the named room on either side: the gate only scales W_c alpha, so the side must come
    # from where the attention lies
    torch.manual_seed(1)
    p = build_policy(PolicyConfig(**{**cfg.__dict__, "compass_readout": True}), vocab)
    named = torch.tensor([[KITCHEN], [KITCHEN], [BEDROOM], [BEDROOM]])
    opt = torch.optim.Adam(p.parameters(), lr=0.03)
    for _ in range(60):
        aux = p.forward_sequence(*inputs, aux=True, rooms=rooms)[2]
        loss = compass_grounding_ce(aux["compass_attention"], aux["compass"], named)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, w in p.named_parameters():
        w.requires_grad_(name.startswith(("compass_readout.", "compass_gate.")))
    turn = torch.tensor([[Action.TURN_LEFT], [Action.TURN_RIGHT], [Action.TURN_RIGHT], [Action.TURN_LEFT]])
    readout = torch.optim.Adam([w for w in p.parameters() if w.requires_grad], lr=0.1)
    frozen = {k: v.clone() for k, v in p.state_dict().items() if not k.startswith(("compass_readout.", "compass_gate."))}
    for _ in range(100):
        logits = p.forward_sequence(*inputs, rooms=rooms)[0]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), turn.reshape(-1))
        readout.zero_grad()
        loss.backward()
        readout.step()
    assert (p.forward_sequence(*inputs, rooms=rooms)[0].argmax(-1) == turn).all()
    assert all(torch.equal(v, p.state_dict()[k]) for k, v in frozen.items())
    assert p.compass_readout.weight[Action.TURN_LEFT, 2] > p.compass_readout.weight[Action.TURN_LEFT, 22]
    assert p.compass_readout.weight[Action.TURN_RIGHT, 22] > p.compass_readout.weight[Action.TURN_RIGHT, 2]

    with pytest.raises(ConfigError, match="compass_readout reads the room compass's attention: it needs room_compass"):
        PolicyConfig(**{**cfg.__dict__, "room_compass": False, "compass_readout": True}).validate()
    from agents.training.trainer import TrainConfig

    with pytest.raises(ConfigError, match="--compass-readout reads the room compass's attention: it needs "
                                          "--room-compass"):
        TrainConfig(room_labels=True, compass_readout=True).validate()
