"""`ecolora estimate`: byte counts equal the method's own encoder on the layout, every download and
round is counted, the time model is spec §9's, and bad input is one `error:` line with exit 2.

The model is a tiny Llama config.json written here (hidden 32, 2 layers): no weights, no hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecolora.compress import wire
from ecolora.compress.layout import AdapterLayout
from ecolora.config import RunConfig, merge
from ecolora.methods import ServerState, build_method
from ecolora.runtime import estimate as est
from ecolora.runtime.driver import sample_clients
from ecolora.runtime.network import round_comm_s, transfer_s
from ecolora.train.model import layout_of

HIDDEN, INTER, LAYERS = 32, 64, 2


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps({
        "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": INTER,
        "num_hidden_layers": LAYERS, "num_attention_heads": 2, "num_key_value_heads": 2,
        "vocab_size": 64, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
        "hidden_act": "silu", "tie_word_embeddings": False}), encoding="utf-8")
    return path


def _cfg(config_file: Path, **over) -> RunConfig:
    base = {"model": {"name": str(config_file)}, "fed": {"clients": 4, "rounds": 3}}
    for sec, values in over.items():
        base.setdefault(sec, {}).update(values)
    return merge(RunConfig(), base)


def _layout(cfg: RunConfig) -> AdapterLayout:
    return layout_of(est.build_lora(est.load_config(cfg.model.name), cfg.model))


def test_layout_is_peft_lora_of_the_config(config_file):
    r = 8
    per_layer = r * (4 * 2 * HIDDEN + 3 * (HIDDEN + INTER))  # q,k,v,o; gate, up, down
    assert _layout(_cfg(config_file)).numel == LAYERS * per_layer
    qv = _layout(_cfg(config_file, model={"target_modules": ["q_proj", "v_proj"]}))
    assert qv.numel == LAYERS * 2 * r * 2 * HIDDEN and len(qv) == LAYERS * 4
    every = _layout(_cfg(config_file, model={"target_modules": ["all-linear"], "lora_r": 4}))
    assert every.numel == LAYERS * per_layer // 2  # llama: all-linear = the 7 projections


def test_bytes_equal_the_methods_encoder(config_file):
    cfg = _cfg(config_file, fed={"local_steps": 3})
    layout = _layout(cfg)
    got = {r.label: r for r in est.estimate(layout, cfg, ["fedit", "ecolora"], 0.25)}
    delta = est.gaussian_delta(layout)
    full = None
    for name in ("fedit", "ecolora"):
        m = build_method(name, cfg.compress, layout)  # not est.prepare'd: same bytes expected
        full = len(m.encode_full_state(est.initial_params(layout, trained=False), 0))
        res = got[name]
        assert res.full_state == full
        for t, row in enumerate(res.rounds):
            want = [len(m.client_update(delta, None, k, t).payload) for k in range(4)]
            assert row.up == want, (name, t)
            assert row.down == ([full] * 4 if t == 0 else [res.broadcast] * 4)
            assert row.comm_s == round_comm_s(row.up, row.down, cfg.network)
            assert row.compute_s == 3 * 0.25
        totals = res.totals
        assert totals["upload_bytes"] == sum(sum(r.up) for r in res.rounds)
        assert totals["compute_s"] == pytest.approx(3 * 3 * 0.25)
        assert totals["total_s"] == pytest.approx(totals["compute_s"] + totals["comm_s"])
    # FedIT: every sender is dense, so the broadcast is the whole Gaussian delta
    fedit = build_method("fedit", cfg.compress, layout)
    assert got["fedit"].broadcast == len(fedit.encode_broadcast(delta, 1, ServerState()))


def test_fedit_upload_is_the_dense_size_and_ecolora_is_smaller(config_file):
    cfg = _cfg(config_file)
    layout = _layout(cfg)
    fedit, eco = est.estimate(layout, cfg, ["fedit", "ecolora"], 1.0)
    delta = est.gaussian_delta(layout)
    dense = wire.encode(wire.Payload(wire.KIND_UPDATE, 2, 0, "fp16", [
        wire.Record(i, 0, d.size, d) for i, d in enumerate(delta)]))
    assert fedit.upload_client == [len(dense)]
    assert 2 * layout.numel * 0.7 < len(dense) < 2 * layout.numel + 40 * len(layout)
    shares = eco.to_dict(fedit)["share_of_fedit"]
    assert fedit.to_dict(fedit)["share_of_fedit"]["upload_bytes"] == 1.0
    assert shares["upload_bytes"] < 0.2 and shares["comm_s"] < 1 and shares["total_s"] < 1


def test_warmup_rounds_are_encoded_at_their_density(config_file):
    cfg = _cfg(config_file, fed={"rounds": 7}, compress={"upload_budget": 0.0})
    layout = _layout(cfg)
    eco = est.estimate(layout, cfg, ["ecolora"], 1.0)[0]
    assert eco.label == "ecolora"
    first = [r.up[0] for r in eco.rounds]
    assert first[0] > first[2] > first[4] > first[5] == first[6]  # exp warm-up over 5 rounds
    m = build_method("ecolora", cfg.compress, layout)
    delta = est.gaussian_delta(layout)
    assert first[3] == len(m.client_update(delta, None, 0, 3).payload)


def test_partial_participation_downloads(config_file):
    cfg = _cfg(config_file, fed={"clients": 6, "rounds": 5, "participation": 0.5, "seed": 3})
    layout = _layout(cfg)
    res = est.estimate(layout, cfg, ["fedit"], 1.0)[0]
    m = build_method("fedit", cfg.compress, layout)
    trained = len(m.encode_full_state(est.initial_params(layout, trained=True), 1))
    assert trained > res.full_state  # B is no longer all zeros
    prev: list[int] = []
    for t, row in enumerate(res.rounds):
        clients = sample_clients(3, t, 6, 0.5)
        assert len(row.up) == len(clients) == 3
        want = [res.broadcast if k in prev else (res.full_state if t == 0 else trained)
                for k in clients]
        assert row.down == want, t
        prev = clients


def test_union_of_independent_senders():
    layout = AdapterLayout.from_shapes({"l.0.q.lora_A.weight": (8, 4096),
                                        "l.0.q.lora_B.weight": (4096, 8)})
    cfg = RunConfig().compress
    m = build_method("ecolora", cfg, layout)
    enc = est.Encoder(m, est.gaussian_delta(layout))
    kept = enc.upload(0, 0)[1]
    agg = enc._aggregate([0] * 5, 0)
    for p, k, d in zip(m.segments[0], kept, agg, strict=True):
        expect = p.size * (1 - (1 - k / p.size) ** 5)
        assert abs(np.count_nonzero(d) - expect) < 0.03 * p.size
    assert enc.broadcast([(k, 0) for k in range(5)], 0) > 0


def test_sparse_download_shrinks_only_sparse_methods(config_file):
    cfg = _cfg(config_file, compress={"sparse_download": False})
    layout = _layout(cfg)
    dense = {r.label: r.broadcast for r in est.estimate(layout, cfg, ["ecolora"], 1.0)}
    sparse_cfg = _cfg(config_file, compress={"sparse_download": True})
    sparse = {r.label: r.broadcast for r in est.estimate(layout, sparse_cfg, ["ecolora"], 1.0)}
    assert sparse["ecolora"] < dense["ecolora"]
    assert sparse["fedit"] == dense["fedit"]


def test_cli_table_and_json(config_file, tmp_path, run_cli, capsys):
    out = tmp_path / "est.json"
    code = run_cli("estimate", "--model", config_file.parent, "--rank", "4", "--targets",
                   "q_proj,v_proj", "--clients", "4", "--rounds", "3", "--local-steps", "2",
                   "--network", "mobile", "--step-s", "0.5", "--methods", "ecolora",
                   "--set", "compress.rho_b=0.3", "--json", out, "--quiet")
    text = capsys.readouterr().out
    assert code == 0, text
    assert "bytes per round" in text and "whole run" in text and "ecolora" in text
    data = json.loads(out.read_text())
    assert data["lora_params"] == LAYERS * 2 * 4 * 2 * HIDDEN
    assert data["targets"] == ["q_proj", "v_proj"] and data["network"]["preset"] == "mobile"
    eco, fedit = data["methods"]  # fedit added, last, for the shares
    assert (eco["method"], fedit["method"]) == ("ecolora", "fedit")
    assert eco["compress"]["rho_b"] == 0.3 and len(eco["rounds"]) == 3
    assert eco["share_of_fedit"]["upload_bytes"] < 1
    assert fedit["compute_s"] == pytest.approx(3 * 2 * 0.5)
    row = eco["rounds"][1]
    up = [row["upload_bytes_max"]] * 4
    assert row["comm_s"] == pytest.approx(
        max(transfer_s(b, 5.0, 30.0) for b in up) + transfer_s(eco["broadcast_bytes"], 20.0, 30.0))


def test_cli_measure_step(config_file, run_cli, capsys, monkeypatch):
    code = run_cli("estimate", "--model", config_file, "--measure-step", "--rounds", "2",
                   "--clients", "2", "--set", "model.max_seq_len=16", "--set", "fed.batch_size=2",
                   "--set", "model.device=cpu", "--quiet")
    text = capsys.readouterr().out
    assert code == 0, text
    assert "measured step:" in text and "2 x 16 tokens" in text
    monkeypatch.setattr(est, "available_bytes", lambda device: 1000)
    assert run_cli("estimate", "--model", config_file, "--measure-step", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --measure-step") and "\n" not in err


@pytest.mark.parametrize("case", ["missing", "bad_json", "no_model_type", "folder_without",
                                  "unknown_method", "bad_set", "no_step", "bad_step",
                                  "bad_target"])
def test_bad_input_is_one_error_line(case, config_file, tmp_path, run_cli, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json" if case == "bad_json" else '{"hidden_size": 8}')
    args = {"missing": ["--model", tmp_path / "nope.json", "--step-s", "1"],
            "bad_json": ["--model", bad, "--step-s", "1"],
            "no_model_type": ["--model", bad, "--step-s", "1"],
            "folder_without": ["--model", tmp_path, "--step-s", "1"],
            "unknown_method": ["--model", config_file, "--step-s", "1", "--methods", "fedx"],
            "bad_set": ["--model", config_file, "--step-s", "1", "--set", "compress.rhoo=1"],
            "no_step": ["--model", config_file],
            "bad_step": ["--model", config_file, "--step-s", "0"],
            "bad_target": ["--model", config_file, "--step-s", "1", "--targets", "nope_proj"],
            }[case]
    assert run_cli("estimate", *args, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
