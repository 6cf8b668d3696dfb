"""Closed-form checks of the server's per-segment memory (compress.segment_memory)."""

from __future__ import annotations

import numpy as np
import pytest

from ecolora.compress.layout import AdapterLayout
from ecolora.config import CompressConfig
from ecolora.methods import ServerState, build_method

LAYOUT = AdapterLayout.from_shapes({"layers.0.q.lora_A": (2, 4), "layers.0.q.lora_B": (4, 2)})


def _method(beta: float, segments: int = 2):
    cfg = CompressConfig(num_segments=segments, segment_memory=beta, upload_budget=0.0,
                         server_lr=1.0, rho_a=1.0, rho_b=1.0, sparsity_schedule="constant",
                         residual_scope="sparsified_only", value_dtype="fp32")
    return build_method("ecolora", cfg, LAYOUT)


def _round(m, state, deltas: dict[int, list[np.ndarray]], round_: int):
    clients = sorted(deltas)
    ups = [m.decode_update(m.client_update(deltas[k], None, k, round_).payload, k, round_, 1.0)
           for k in clients]
    return m.aggregate(ups, state, clients)


def _const(a: float, b: float) -> list[np.ndarray]:
    return [np.full(8, a, np.float32), np.full(8, b, np.float32)]


def test_full_memory_steps_with_every_clients_latest_segment():
    m = _method(1.0)
    state = ServerState()
    seg_of_a = m.segments[0][0].tensor  # which tensor segment 0 holds
    # round 0: client 0 sends segment 0, client 1 segment 1; round 1 the other way round
    _round(m, state, {0: _const(1, 10), 1: _const(2, 20)}, 0)
    out = _round(m, state, {0: _const(3, 30), 1: _const(4, 40)}, 1)
    # segment 0 at round 1: client 1's fresh value and client 0's from round 0, averaged
    fresh = {0: _const(3, 30), 1: _const(4, 40)}
    old = {0: _const(1, 10), 1: _const(2, 20)}
    t0, t1 = seg_of_a, 1 - seg_of_a
    np.testing.assert_allclose(out[t0], (fresh[1][t0] + old[0][t0]) / 2)
    np.testing.assert_allclose(out[t1], (fresh[0][t1] + old[1][t1]) / 2)


@pytest.mark.parametrize("beta", [0.25, 0.5])
def test_beta_mixes_the_fresh_mean_and_the_table(beta):
    plain, mixed, full = _method(0.0), _method(beta), _method(1.0)
    states = [ServerState(), ServerState(), ServerState()]
    rounds = [{0: _const(1, 10), 1: _const(2, 20)}, {0: _const(3, 30), 1: _const(4, 40)}]
    for r, deltas in enumerate(rounds):
        a, b, c = (_round(m, st, deltas, r)
                   for m, st in zip((plain, mixed, full), states, strict=True))
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_allclose(y, (1 - beta) * x + beta * z, rtol=1e-6)
    assert states[0].memory is None  # beta = 0 keeps nothing


def test_one_segment_full_participation_is_the_plain_mean():
    m, plain = _method(1.0, segments=1), _method(0.0, segments=1)
    s1, s2 = ServerState(), ServerState()
    for r in range(3):
        deltas = {k: _const(k + r, 2 * k - r) for k in range(3)}
        a, b = _round(m, s1, deltas, r), _round(plain, s2, deltas, r)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6)


def test_absent_clients_keep_counting_with_their_latest_update():
    m = _method(1.0, segments=1)
    state = ServerState()
    _round(m, state, {0: _const(1, 1), 1: _const(3, 3)}, 0)
    out = _round(m, state, {0: _const(5, 5)}, 1)  # client 1 is not sampled
    np.testing.assert_allclose(out[0], (5 + 3) / 2)


def test_memory_needs_the_senders():
    m = _method(1.0)
    with pytest.raises(ValueError, match="clients"):
        m.aggregate([], ServerState())


def test_memory_survives_a_checkpoint(tmp_path):
    from ecolora.config import RunConfig
    from ecolora.runtime.checkpoint import SimState, load_checkpoint, save_checkpoint

    m = _method(1.0)
    state = ServerState()
    _round(m, state, {0: _const(1, 10), 3: _const(2, 20)}, 0)
    names = [t.name for t in LAYOUT.tensors]
    cfg = RunConfig()
    sim = SimState(round=1, params=[np.zeros(8, np.float32)] * 2, initial={}, rows=[{}],
                   server=state)
    save_checkpoint(tmp_path / "c.safetensors", sim, cfg, names)
    back = load_checkpoint(tmp_path / "c.safetensors", cfg, names).server.memory
    assert back.known == state.memory.known and back.weight == state.memory.weight
    for k, arrays in state.memory.updates.items():
        for a, b in zip(arrays, back.updates[k], strict=True):
            np.testing.assert_array_equal(a, b)
