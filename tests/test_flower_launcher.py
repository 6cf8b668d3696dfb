"""The loopback launcher checks ``-c`` before starting anything: a misspelled key is named with
its close match, a bad value with its reason, one ``error:`` line and exit 2 (no traceback, no
SuperLink started)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr (Flower) is not installed")

from ecolora.runtime.flower import local  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "apps" / "flower"


@pytest.mark.parametrize(("config", "expect"), [
    ("compress.rho_bb=0.1", "unknown run-config key 'compress.rho_bb'; did you mean "
                            "'compress.rho_b'?"),
    ('method="fedavg"', "unknown method 'fedavg'; choose one of fedit"),
    ("compress.rho_b=1.5", "`rho_b` must be in (0.0, 1.0], got 1.5"),
    ('flower.round-timeout="soon"', "`flower.round-timeout` expects float, got 'soon'"),
    ("fed.rounds=[", "not 'key=value' TOML pairs"),
])
def test_bad_overrides_exit_2_with_one_line(config, expect, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(local.LocalDeployment, "start", lambda self: started.append(self))
    assert local.main([str(APP), "-c", config]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expect in err, err
    assert "\n" not in err and "Traceback" not in err
    assert not started


def test_missing_app_is_one_line(tmp_path, capsys):
    assert local.main([str(tmp_path), "-c", "fed.rounds=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a Flower app project" in err
