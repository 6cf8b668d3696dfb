"""A corpus of bad inputs to `ecolora run` (issue 15): each one ends in exactly one `error: ...`
line on stderr and exit 2, never a traceback, and leaves no run folder or file behind.

Cases run in this process through ``ecolora.cli.main.main`` (an uncaught exception would fail
the test with its traceback); most fail while the config is checked, the rest while the data or
the tiny model is read, so the corpus takes seconds. A few run as real subprocesses to pin the
exit status and stderr of the installed entry point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Build = Callable[["Env"], list[object]]


class Env:
    """Paths a case may use: the run folder to stay absent, the tiny model and data, tmp."""

    def __init__(self, tmp: Path, model: Path, data: Path) -> None:
        self.tmp, self.model, self.data, self.out = tmp, model, data, tmp / "out"

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def jsonl(self, name: str, rows: list[object]) -> Path:
        return self.file(name, "".join(json.dumps(r) + "\n" for r in rows))

    def model_copy(self, name: str, mutate: Callable[[Path], None]) -> Path:
        folder = self.tmp / name
        shutil.copytree(self.model, folder)
        mutate(folder)
        return folder


def _rows(n: int, **extra: str) -> list[dict]:
    return [{"instruction": f"add {i}", "input": "", "output": str(i), **extra} for i in range(n)]


def _edit_config(**changes: object) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(changes)
        (folder / "config.json").write_text(json.dumps(cfg))
    return mutate


def _weights(transform: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / "model.safetensors"
        path.write_bytes(transform(path.read_bytes()))
    return mutate


def _flip(data: bytes, at: int, n: int = 64) -> bytes:
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + n]) + data[at + n:]


def _set(*items: str) -> Build:
    return lambda e: [x for item in items for x in ("--set", item)]


def _opt(*args: object) -> Build:
    return lambda e: list(args)


# (id, argv builder, substring of the one error line)
CASES: list[tuple[str, Build, str]] = [
    # ---------------------------------------------------------------- method, --set syntax
    ("unknown method", _opt("--method", "fedprox"), "unknown method 'fedprox'"),
    ("empty method", _opt("--method", ""), "unknown method ''"),
    ("unknown knob", _set("compress.rho_x=0.1"), "unknown knob 'rho_x'"),
    ("unknown bare knob", _set("bogus=1"), "unknown knob 'bogus'"),
    ("unknown section", _set("foo.bar=1"), "unknown section 'foo'"),
    ("--set without =", _set("rho_a"), "--set expects key=value"),
    ("bad data.fields", _set("data.fields=instruction"), "data.fields expects ours:theirs"),
    ("fields mapping unknown key", _set("data.fields=instruction:a,response:b,colour:c"),
     "unknown field mapping key 'colour'"),
    ("fields mapping without response", _set("data.fields=instruction:a"),
     "field mapping must name 'response'"),
    # ---------------------------------------------------------------- types
    ("rounds not a number", _set("rounds=many"), "`rounds` expects int"),
    ("rounds a float", _set("rounds=1.5"), "`rounds` expects int"),
    ("lr not a number", _set("fed.lr=fast"), "`lr` expects float"),
    ("bool not a bool", _set("gradient_checkpointing=maybe"),
     "`gradient_checkpointing` expects bool"),
    ("--rounds not an int", _opt("--rounds", "x"), "'x' is not a valid integer"),
    ("--clients not an int", _opt("--clients", "3.5"), "is not a valid integer"),
    ("unknown option", _opt("--bogus"), "No such option '--bogus'"),
    ("option without its value", _opt("--rounds"), "'--rounds'"),
    # ---------------------------------------------------------------- model section ranges
    ("lora_r 0", _set("lora_r=0"), "`lora_r` must be >= 1"),
    ("lora_alpha 0", _set("lora_alpha=0"), "`lora_alpha` must be in"),
    ("lora_dropout 1", _set("lora_dropout=1.0"), "`lora_dropout` must be in"),
    ("max_seq_len 4", _set("max_seq_len=4"), "`max_seq_len` must be >= 8"),
    ("max_new_tokens 0", _set("max_new_tokens=0"), "`max_new_tokens` must be >= 1"),
    ("negative threads", _set("threads=-2"), "`threads` must be >= 0"),
    ("precision fp8", _set("precision=fp8"), "`precision` must be one of"),
    ("device tpu", _set("model.device=tpu"), "`device` must be one of"),
    # ---------------------------------------------------------------- data section ranges
    ("partition unknown", _set("partition=weird"), "`partition` must be one of"),
    ("dirichlet_alpha 0", _set("dirichlet_alpha=0"), "`dirichlet_alpha` must be in"),
    ("dirichlet_alpha nan", _set("dirichlet_alpha=nan"), "`dirichlet_alpha` must be in"),
    ("categories_per_client 0", _set("categories_per_client=0"), "`categories_per_client`"),
    ("train_examples -1", _set("train_examples=-1"), "`train_examples` must be >= 0"),
    ("eval_examples 0", _set("eval_examples=0"), "`eval_examples` >= 1"),
    ("eval_samples -1", _set("eval_samples=-1"), "`eval_samples` >= 0"),
    ("records not a slice", _set("data.records=abc"), "`records` must be 'START:STOP'"),
    ("records reversed", _set("data.records=5:2"), "`records` needs 0 <= START < STOP"),
    ("records negative", _set("data.records=-1:"), "`records` needs 0 <= START < STOP"),
    ("answer_extract unknown", _set("answer_extract=bogus"), "`answer_extract` must be one of"),
    # ---------------------------------------------------------------- fed section ranges
    ("--clients 0", _opt("--clients", "0"), "`clients` must be >= 1"),
    ("--clients negative", _opt("--clients", "-3"), "`clients` must be >= 1"),
    ("--rounds 0", _opt("--rounds", "0"), "`rounds` must be >= 1"),
    ("local_steps 0", _set("local_steps=0"), "`local_steps` must be >= 1"),
    ("batch_size 0", _set("batch_size=0"), "`batch_size` must be >= 1"),
    ("eval_every 0", _set("eval_every=0"), "`eval_every` must be >= 1"),
    ("participation 0", _set("participation=0"), "`participation` must be in"),
    ("participation 1.5", _set("participation=1.5"), "`participation` must be in"),
    ("lr 0", _set("fed.lr=0"), "`lr` must be in"),
    ("lr negative", _set("fed.lr=-1"), "`lr` must be in"),
    ("lr 11", _set("fed.lr=11"), "`lr` must be in"),
    ("lr nan", _set("fed.lr=nan"), "`lr` must be in"),
    ("lr inf", _set("fed.lr=inf"), "`lr` must be in"),
    ("lr_schedule unknown", _set("lr_schedule=linear"), "`lr_schedule` must be one of"),
    ("weight_decay negative", _set("weight_decay=-1"), "`weight_decay` must be in"),
    ("objective unknown", _set("objective=ppo"), "`objective` must be one of"),
    ("dpo_beta 0", _set("dpo_beta=0"), "`dpo_beta` must be in"),
    ("checkpoint_every negative", _set("checkpoint_every=-1"), "`checkpoint_every` must be >= 0"),
    ("--seed 2^64", _opt("--seed", str(2**64)), "`seed` must be in [0, 4294967295]"),
    ("--seed 2^64+5 via --set", _set(f"fed.seed={2**64 + 5}"), "`seed` must be in"),
    ("--seed 2^32", _opt("--seed", str(2**32)), "`seed` must be in"),
    ("--seed negative", _opt("--seed", "-1"), "`seed` must be in"),
    # ---------------------------------------------------------------- compress section
    ("density > 1", _set("rho_a=1.5"), "`rho_a` must be in (0.0, 1.0]"),
    ("density 0", _set("rho_b=0"), "`rho_b` must be in (0.0, 1.0]"),
    ("density negative", _set("rho_a=-0.1"), "`rho_a` must be in"),
    ("density inf", _set("rho_b=inf"), "`rho_b` must be in"),
    ("num_segments 0", _set("num_segments=0"), "num_segments"),
    ("too many segments", _set("num_segments=100000"), "num_segments=100000 is larger than"),
    ("value_dtype unknown", _set("value_dtype=fp8"), "`value_dtype` must be one of"),
    # ---------------------------------------------------------------- network section
    ("uplink subnormal", _set("network.uplink_mbps=1e-310"), "`uplink_mbps` must be in"),
    ("uplink 0", _set("network.uplink_mbps=0"), "`uplink_mbps` must be in"),
    ("downlink negative", _set("network.downlink_mbps=-5"), "`downlink_mbps` must be in"),
    ("downlink tiny", _set("network.downlink_mbps=1e-9"), "`downlink_mbps` must be in"),
    ("latency negative", _set("network.latency_ms=-1"), "`latency_ms` must be in"),
    ("latency inf", _set("network.latency_ms=inf"), "`latency_ms` must be in"),
    ("transport unknown", _set("network.transport=udp"), "`transport` must be one of"),
    ("--network unknown", _opt("--network", "satellite"), "satellite"),
    # ---------------------------------------------------------------- --config files
    ("config missing", lambda e: ["--config", e.tmp / "nope.toml"], "config file not found"),
    ("config a folder", lambda e: ["--config", e.tmp], "config file not found"),
    ("config not TOML", lambda e: ["--config", e.file("c.toml", "[model\nname=")],
     "invalid TOML"),
    ("config not UTF-8", lambda e: ["--config", e.file("c.toml", b"\xff\xfe[model]")],
     "invalid TOML"),
    ("config unknown section", lambda e: ["--config", e.file("c.toml", "[modle]\nname='x'\n")],
     "unknown section 'modle'"),
    ("config section not a table", lambda e: ["--config", e.file("c.toml", "model = 3\n")],
     "must be a table"),
    ("config unknown key", lambda e: ["--config", e.file("c.toml", "[fed]\nround = 3\n")],
     "unknown knob 'round'"),
    ("config wrong type", lambda e: ["--config", e.file("c.toml", "[fed]\nrounds = 'x'\n")],
     "`rounds` expects int"),
    ("config bad method", lambda e: ["--config", e.file("c.toml", "method = 'sgd'\n")],
     "unknown method 'sgd'"),
    # ---------------------------------------------------------------- --out
    ("--out empty", _opt("--out", ""), "--out is empty"),
    ("--out blank", _opt("--out", "  "), "--out is empty"),
    ("--out an existing file", lambda e: ["--out", e.file("taken", "x")],
     "exists and is not a folder"),
    ("--out under a file", lambda e: ["--out", e.file("plain", "x") / "run"],
     "is not a folder"),
    ("--out not empty", lambda e: ["--out", e.file("full/notes.txt", "x").parent],
     "is not empty; pass --overwrite"),
    ("--overwrite a non-run folder", lambda e: ["--out", e.file("mine/notes.txt", "x").parent,
                                                "--overwrite"], "not an ecolora run folder"),
    ("--overwrite with --resume", lambda e: ["--resume", e.file("r/config.json", "{}").parent,
                                            "--overwrite"], "exclude each other"),
    # ---------------------------------------------------------------- --resume
    ("resume missing folder", lambda e: ["--resume", e.tmp / "gone"], "not a run folder"),
    ("resume folder without config", lambda e: ["--resume", e.file("r/x.txt", "").parent],
     "not a run folder"),
    ("resume config not JSON", lambda e: ["--resume", e.file("r/config.json", "{oops").parent],
     "unreadable config.json"),
    ("resume config a list", lambda e: ["--resume", e.file("r/config.json", "[1]").parent],
     "must hold a JSON object"),
    ("resume config unknown key", lambda e: ["--resume",
                                             e.file("r/config.json", '{"x": {}}').parent],
     "unknown section 'x'"),
    ("resume with another --out", lambda e: ["--resume", e.file("r/config.json", "{}").parent,
                                             "--out", e.tmp / "elsewhere"], "drop --out"),
    # ---------------------------------------------------------------- datasets
    ("dataset missing", lambda e: ["--dataset", e.tmp / "nope.jsonl"], "dataset file not found"),
    ("dataset a folder", lambda e: ["--dataset", e.tmp], "is a directory"),
    ("dataset .txt", lambda e: ["--dataset", e.file("d.txt", "hello")],
     "unsupported file type '.txt'"),
    ("dataset malformed line", lambda e: ["--dataset", e.file("d.jsonl",
                                                             '{"instruction": "a", "output": "b"}'
                                                             '\n{"instruction": "c", oops}\n')],
     "d.jsonl:2: invalid JSON"),
    ("dataset not UTF-8", lambda e: ["--dataset", e.file("d.jsonl", b'{"a": "\xff"}\n')],
     "not valid UTF-8"),
    ("dataset one object", lambda e: ["--dataset", e.file("d.json",
                                                         '{\n "instruction": "a",\n'
                                                         ' "output": "b"\n}\n')],
     "holds a single JSON object"),
    ("dataset empty file", lambda e: ["--dataset", e.file("d.jsonl", "")], "dataset is empty"),
    ("dataset empty list", lambda e: ["--dataset", e.file("d.json", "[]")], "dataset is empty"),
    ("dataset list of numbers", lambda e: ["--dataset", e.file("d.json", "[1, 2]")],
     "expected a JSON object"),
    ("dataset garbage after list",
     lambda e: ["--dataset", e.file("d.json", '[{"instruction": "a", "output": "b"}] x')],
     "extra data after the list"),
    ("dataset unknown format", lambda e: ["--dataset", e.jsonl("d.jsonl", [{"a": 1}] * 5)],
     "d.jsonl:1"),
    ("dataset all responses empty",
     lambda e: ["--dataset", e.jsonl("d.jsonl", [{"instruction": f"q{i}", "output": ""}
                                                 for i in range(30)])],
     "every response is empty"),
    ("dataset all responses blank",
     lambda e: ["--dataset", e.jsonl("d.jsonl", [{"question": f"q{i}", "answer": "  "}
                                                 for i in range(30)])],
     "every response is empty"),
    ("fields name a missing key", lambda e: ["--set", "data.fields=instruction:q,response:a"],
     "'q'"),
    ("category_field missing", _set("data.category_field=label"),
     "missing category field 'label'"),
    ("unknown category", _set("data.categories=poetry"), "unknown category 'poetry'"),
    ("records past the end", _set("data.records=100000:"), "dataset is empty"),
    ("eval file missing", lambda e: ["--eval-dataset", e.tmp / "nope.jsonl"],
     "dataset file not found"),
    ("eval file broken beyond eval_examples",
     lambda e: ["--eval-dataset", e.file("ev.jsonl", "".join(json.dumps(r) + "\n"
                                                             for r in _rows(5)) + "{broken\n"),
                "--set", "eval_examples=2"],
     "ev.jsonl:6: invalid JSON"),
    ("eval file all responses empty",
     lambda e: ["--eval-dataset", e.jsonl("ev.jsonl", [{"instruction": "q", "output": ""}] * 4)],
     "every response is empty"),
    ("eval file empty", lambda e: ["--eval-dataset", e.file("ev.jsonl", "\n\n")],
     "dataset is empty"),
    # ---------------------------------------------------------------- models
    ("model a file", lambda e: ["--model", e.file("m.bin", "x")], "model path is not a folder"),
    ("model folder without config.json", lambda e: ["--model", e.file("m/x", "").parent],
     "model folder has no config.json"),
    ("model config.json a list",
     lambda e: ["--model", e.model_copy("m", lambda f: (f / "config.json").write_text("[1]"))],
     "config.json must hold a JSON object, got list"),
    ("model config.json not JSON",
     lambda e: ["--model", e.model_copy("m", lambda f: (f / "config.json").write_text("{x"))],
     "config.json is not valid JSON"),
    ("model config.json without model_type",
     lambda e: ["--model", e.model_copy("m", lambda f: (f / "config.json").write_text("{}"))],
     "cannot load model"),
    ("model weights truncated",
     lambda e: ["--model", e.model_copy("m", _weights(lambda b: b[:-100]))],
     "damaged weights file"),
    ("model weights garbage",
     lambda e: ["--model", e.model_copy("m", _weights(lambda b: b"\0" * 50))],
     "damaged weights file"),
    ("model weights empty", lambda e: ["--model", e.model_copy("m", _weights(lambda b: b""))],
     "damaged weights file"),
    ("model weights header flipped",
     lambda e: ["--model", e.model_copy("m", _weights(lambda b: _flip(b, 20)))],
     "damaged weights file"),
    ("model weights missing",
     lambda e: ["--model", e.model_copy("m", lambda f: (f / "model.safetensors").unlink())],
     "cannot load model"),
    ("model weights of another width",
     lambda e: ["--model", e.model_copy("m", _edit_config(hidden_size=64,
                                                          intermediate_size=128))],
     "weights do not match config.json"),
    ("model config with more layers",
     lambda e: ["--model", e.model_copy("m", _edit_config(num_hidden_layers=3))],
     "tensors missing from the weights file"),
    ("model vocab smaller than weights",
     lambda e: ["--model", e.model_copy("m", _edit_config(vocab_size=20))],
     "weights do not match config.json"),
    ("model tokenizer broken",
     lambda e: ["--model", e.model_copy("m", lambda f: (f / "tokenizer.json").write_text("{x"))],
     "cannot load model"),
    ("lora target missing", _set("model.target_modules=nonexistent_proj"),
     "cannot attach LoRA"),
]


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,build,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, build, message, tmp_path, tiny_model_dir, alpaca_file, capsys,
                   monkeypatch, run_cli) -> None:
    env = Env(tmp_path, tiny_model_dir, alpaca_file)
    monkeypatch.chdir(tmp_path)  # a run folder left in the current directory would show too
    args = [str(a) for a in build(env)]
    argv: list[object] = ["run", *args, "--quiet"]
    if "--out" not in args and "--resume" not in args:
        argv += ["--out", env.out]
    if "--model" not in args and "--resume" not in args:
        argv += ["--model", tiny_model_dir]
    if "--dataset" not in args and "--resume" not in args:
        argv += ["--dataset", alpaca_file]
    before = _listing(tmp_path)
    capsys.readouterr()
    code = run_cli(*argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (code, captured.out, captured.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert message in lines[0]
    assert "Traceback" not in captured.err
    assert not env.out.exists()
    assert _listing(tmp_path) == before  # nothing created: no folder, no lock, no temp file


def test_read_only_parent_is_refused(tmp_path, capsys, run_cli) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: permissions do not apply")
        code = run_cli("run", "--out", parent / "run", "--quiet")
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: ") and "is not writable" in err
        assert "\n" not in err and not (parent / "run").exists()
    finally:
        parent.chmod(0o755)


# ------------------------------------------------------------------- real processes


def ecolora(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import ecolora as package

    root = str(Path(package.__file__).resolve().parent.parent)  # found from any cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "ecolora.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


SUBPROCESS = [
    (["--seed", str(2**64)], "`seed` must be in"),
    (["--out", ""], "--out is empty"),
    (["--set", "network.uplink_mbps=1e-310"], "`uplink_mbps` must be in"),
]


@pytest.mark.parametrize("args,message", SUBPROCESS, ids=[m for _, m in SUBPROCESS])
def test_bad_input_in_a_real_process(args, message, tmp_path) -> None:
    res = ecolora("run", *args, "--quiet", cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []
