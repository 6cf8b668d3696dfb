"""Flower run-config -> RunConfig, the app's pyproject table, and the message protocol."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from ecolora.config import SECTIONS, RunConfig
from ecolora.errors import ConfigError, CorruptPayloadError
from ecolora.runtime.flower.config import FlowerOptions, from_run_config, nest, runtime_options

APP = Path(__file__).resolve().parents[1] / "apps" / "flower"


def app_table() -> dict:
    project = tomllib.loads((APP / "pyproject.toml").read_text(encoding="utf-8"))
    return project, project["tool"]["flwr"]["app"]["config"]


def test_pyproject_declares_every_knob_with_its_default():
    """Flower only accepts -c keys the app declares: keep the table in sync with ecolora/config/."""
    project, table = app_table()
    knobs = {f"{sec}.{f.name}" for sec, cls in SECTIONS.items() for f in fields(cls)}
    runtime = {"flower.out", "flower.round-timeout", "flower.join-timeout", "flower.min-clients",
               "flower.resume"}
    assert set(table) == knobs | runtime | {"method"}
    cfg, opts = from_run_config(table)
    assert cfg == RunConfig() and opts == FlowerOptions()
    components = project["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": "ecolora.runtime.flower.server_app:app",
                          "clientapp": "ecolora.runtime.flower.client_app:app"}


def test_dotted_keys_map_onto_sections():
    cfg, opts = from_run_config({
        "method": "fedit", "fed.rounds": 2, "compress.rho_b": 0.1, "fed.lr": 1,
        "model.target_modules": "q_proj,v_proj", "data.fields": "instruction:prompt,response:out",
        "compress.error_feedback": "false", "flower.out": "/tmp/x", "flower.round-timeout": 30,
    })
    assert cfg.method == "fedit" and cfg.fed.rounds == 2 and cfg.compress.rho_b == 0.1
    assert cfg.fed.lr == 1.0 and cfg.model.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.fields == {"instruction": "prompt", "response": "out"}
    assert cfg.compress.error_feedback is False
    assert opts.out == "/tmp/x" and opts.round_timeout == 30.0
    assert nest({"data.fields.instruction": "q"}) == {"data": {"fields": {"instruction": "q"}}}


@pytest.mark.parametrize("raw,message", [
    ({"compress.rho_x": 0.1}, "unknown knob 'rho_x'; did you mean"),
    ({"fedd.rounds": 2}, "unknown section 'fedd'"),
    ({"rounds": 2}, "must be 'section.knob'"),
    ({"compress.rho_b": 1.5}, "`rho_b` must be in (0.0, 1.0]"),
    ({"fed.rounds": "many"}, "`rounds` expects int"),
    ({"method": "fedprox"}, "unknown method 'fedprox'"),
    ({"flower.timeout": 3}, "unknown run-config key 'flower.timeout'"),
    ({"flower.round-timeout": 0}, "must be > 0"),
    ({"flower.min-clients": "x"}, "`flower.min-clients` expects int"),
])
def test_bad_run_config_is_a_config_error(raw, message):
    with pytest.raises(ConfigError) as exc:
        from_run_config(raw)
    assert message in str(exc.value)


def test_flower_cli_overrides_fuse_with_the_app_table():
    """What `flwr run -c '...'` produces, through Flower's own parser and fuse."""
    flwr_config = pytest.importorskip("flwr.common.config")
    _, table = app_table()
    flat = flwr_config.flatten_dict(table)
    overrides = flwr_config.parse_config_args(
        ['fed.rounds=2 compress.rho_b=0.1 model.name="/data/my model" method="fedit"'])
    cfg, _ = from_run_config(flwr_config.fuse_dicts(flat, overrides))
    assert (cfg.fed.rounds, cfg.compress.rho_b, cfg.model.name, cfg.method) == (
        2, 0.1, "/data/my model", "fedit")
    with pytest.raises(ValueError, match="not present"):  # Flower rejects undeclared keys
        flwr_config.fuse_dicts(flat, flwr_config.parse_config_args(["fed.roundz=2"]))


def test_runtime_options_defaults():
    assert runtime_options({}) == FlowerOptions()
    assert str(FlowerOptions().out_dir(RunConfig())) == "runs/flower-ecolora-seed0"


def test_protocol_round_trip_and_untrusted_replies():
    pytest.importorskip("flwr")
    from flwr.app import ConfigRecord, RecordDict

    from ecolora.runtime.flower import protocol as P

    res = P.TrainRes(3, 1, b"\x00payload", 1.5, 7, 0.25)
    assert P.parse_train_reply(P.train_reply(res)) == res
    ins = P.TrainIns(2, 0, P.SYNC_DELTA, 1, b"bytes")
    assert P.parse_train(P.train_content(ins)) == ins
    assert P.parse_hello(P.hello_reply(2, 3)) == (2, 3)
    bad = [RecordDict(), RecordDict({P.KEY: ConfigRecord({"round": 1})}),
           RecordDict({P.KEY: ConfigRecord({"round": True, "client": 0, "payload": b"",
                                            "loss": 0.0, "nonzeros": 0, "compute-s": 0.0})}),
           RecordDict({P.KEY: ConfigRecord({"round": 1, "client": 0, "payload": "text",
                                            "loss": 0.0, "nonzeros": 0, "compute-s": 0.0})})]
    for content in bad:
        with pytest.raises(CorruptPayloadError):
            P.parse_train_reply(content)
    with pytest.raises(CorruptPayloadError, match="sync"):
        P.parse_train(RecordDict({P.KEY: ConfigRecord({"sync": "half"})}))


def test_oversized_messages_are_refused_on_both_sides(monkeypatch):
    pytest.importorskip("flwr")
    from ecolora.runtime.flower import protocol as P

    monkeypatch.setenv("ECOLORA_MAX_MESSAGE_BYTES", "16")
    big = P.TrainRes(3, 1, b"x" * 17, 1.5, 7, 0.25)
    with pytest.raises(CorruptPayloadError, match="exceed the limit 16"):
        P.parse_train_reply(P.train_reply(big))  # server side
    with pytest.raises(CorruptPayloadError, match="exceed the limit 16"):
        P.parse_train(P.train_content(P.TrainIns(2, 0, P.SYNC_DELTA, 1, b"y" * 17)))  # client
    small = P.TrainRes(3, 1, b"x" * 16, 1.5, 7, 0.25)
    assert P.parse_train_reply(P.train_reply(small)) == small


def test_loopback_launcher_gives_each_node_a_share_of_the_cores():
    from ecolora.runtime.flower.local import launcher_config

    assert launcher_config("", 3, cores=8) == "fed.clients=3 model.threads=2"
    assert launcher_config("fed.rounds=2", 4, cores=2) == (
        "fed.clients=4 model.threads=1 fed.rounds=2")
    # what the user set wins
    assert launcher_config("model.threads=3 fed.clients=5", 2, cores=2) == (
        "model.threads=3 fed.clients=5")
