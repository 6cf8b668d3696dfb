"""The grid file of `ecolora matrix`: rows of configs x methods, parsed and validated up front.

A robustness matrix takes hours of CPU, so every mistake a file can hold (an unknown key, a
misspelt knob, a duplicate row, a dangling ``baseline_from``) must fail in the first second, as
one line, before any run starts. This module is pure logic: it turns the TOML dict into
``Grid`` and the grid into jobs; running, caching and writing live in ``cli/matrix.py``.

    [defaults]                      # overrides applied to every row
    fed = {eval_every = 5}
    [[row]]
    name = "S2"                     # unique
    family = "segments"             # one md section and one PNG per family
    set = {fed = {rounds = 20}, compress = {num_segments = 2}}
    metric = "accuracy"             # or "loss" (eval_loss, lower is better)
    methods = ["fedit", "ecolora"]  # or {label = "eco-m0", method = "ecolora", set = {...}}
    [[row]]
    name = "S4"
    ...
    methods = ["ecolora"]
    baseline_from = "S2"            # reuse S2's FedIT runs (only compress knobs may differ)
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ecolora.config import METHODS, RunConfig, load_toml, merge
from ecolora.errors import ConfigError
from ecolora.runtime.batch import Job, job_for, parse_label

BASELINE = "fedit"
METRICS = ("accuracy", "loss")
GRID_KEYS = ("title", "defaults", "row")
ROW_KEYS = ("name", "family", "set", "metric", "methods", "baseline_from")
METHOD_KEYS = ("label", "method", "set")
#: Bump when what a stored run means changes without its config changing (e.g. a fix in the
#: training loop); every cached run is then re-run.
CACHE_VERSION = "matrix-1"


@dataclass(frozen=True)
class MethodSpec:
    label: str  # the name in tables; unique within a row
    method: str  # a label as compare accepts it: METHOD or METHOD+down
    set: dict = field(default_factory=dict)  # extra overrides for this method only


@dataclass(frozen=True)
class RowSpec:
    name: str
    family: str
    metric: str
    cfg: RunConfig  # defaults + the row's own overrides (method and seed set per job)
    methods: tuple[MethodSpec, ...]
    baseline_from: str | None = None

    @property
    def baseline_row(self) -> str | None:
        """The row whose FedIT runs this row compares with (itself when it runs FedIT)."""
        if self.baseline_from:
            return self.baseline_from
        return self.name if any(m.label == BASELINE for m in self.methods) else None


@dataclass(frozen=True)
class Grid:
    path: str
    title: str
    rows: tuple[RowSpec, ...]

    def row(self, name: str) -> RowSpec:
        return next(r for r in self.rows if r.name == name)

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(r.family for r in self.rows))


def _unknown(kind: str, key: str, known: tuple[str, ...] | list[str], where: str) -> ConfigError:
    near = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ConfigError(f"{where}: unknown {kind} {key!r}{hint}")


def _check_keys(table: dict, known: tuple[str, ...], kind: str, where: str) -> None:
    for key in table:
        if key not in known:
            raise _unknown(kind, key, known, where)


def _merge(cfg: RunConfig, over: Any, where: str) -> RunConfig:
    if not isinstance(over, dict):
        raise ConfigError(f"{where}: `set` must be a table of sections, got {over!r}")
    if "method" in over:
        raise ConfigError(f"{where}: set the method in `methods`, not in `set`")
    try:
        return merge(cfg, over)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _method(entry: Any, where: str) -> MethodSpec:
    if isinstance(entry, str):
        spec = MethodSpec(entry, entry)
    elif isinstance(entry, dict):
        _check_keys(entry, METHOD_KEYS, "method key", where)
        name = entry.get("method", entry.get("label"))
        if not isinstance(name, str):
            raise ConfigError(f"{where}: a method table needs `method` (e.g. \"ecolora\")")
        spec = MethodSpec(str(entry.get("label", name)), name, dict(entry.get("set", {})))
    else:
        raise ConfigError(f"{where}: a method is a label or a table, got {entry!r}")
    name, _ = parse_label(spec.method)
    if name not in METHODS:
        raise ConfigError(f"{where}: unknown method {name!r}; choose from {', '.join(METHODS)}")
    if spec.label == BASELINE and spec.method != BASELINE:
        raise ConfigError(f"{where}: the label {BASELINE!r} is kept for FedIT itself")
    return spec


def _row(raw: Any, base: RunConfig, i: int) -> RowSpec:
    where = f"row {i + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [[row]] entries must be tables")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        _check_keys(raw, ROW_KEYS, "row key", where)
        raise ConfigError(f"{where}: every row needs a `name`")
    where = f"row {name!r}"
    _check_keys(raw, ROW_KEYS, "row key", where)
    metric = raw.get("metric", "accuracy")
    if metric not in METRICS:
        raise ConfigError(f"{where}: `metric` must be one of {', '.join(METRICS)}, got {metric!r}")
    methods_raw = raw.get("methods", [BASELINE, "ecolora"])
    if not isinstance(methods_raw, list) or not methods_raw:
        raise ConfigError(f"{where}: `methods` must be a non-empty list")
    methods = tuple(_method(m, where) for m in methods_raw)
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: a method label appears twice in {labels}")
    cfg = _merge(base, raw.get("set", {}), where)
    for m in methods:  # each method's own overrides must be valid too
        _merge(cfg, m.set, f"{where}, method {m.label!r}")
    baseline_from = raw.get("baseline_from")
    if baseline_from is not None and BASELINE in labels:
        raise ConfigError(f"{where}: runs {BASELINE} itself, so `baseline_from` makes no sense")
    return RowSpec(name, str(raw.get("family", "rows")), metric, cfg, methods, baseline_from)


def _without(cfg: RunConfig, *sections: str) -> dict:
    d = cfg.to_dict()
    return {k: v for k, v in d.items() if k not in sections}


def _check_baseline(row: RowSpec, by_name: dict[str, RowSpec]) -> None:
    where = f"row {row.name!r}"
    ref = by_name.get(row.baseline_from)
    if ref is None:
        raise _unknown("baseline_from row", str(row.baseline_from), list(by_name), where)
    if not any(m.label == BASELINE for m in ref.methods):
        raise ConfigError(f"{where}: baseline_from row {ref.name!r} does not run {BASELINE}")
    mine, theirs = _without(row.cfg, "compress", "method"), _without(ref.cfg, "compress", "method")
    if mine != theirs:
        diff = [f"{s}.{k}" for s in mine for k in mine[s] if mine[s][k] != theirs[s][k]]
        raise ConfigError(f"{where}: baseline_from {ref.name!r} needs the same config outside "
                          f"[compress]; differs in {', '.join(diff)}")


def parse_grid(raw: dict, path: str = "<grid>") -> Grid:
    """The validated grid of a TOML dict; every row's and method's config is built once here."""
    _check_keys(raw, GRID_KEYS, "key", path)
    defaults = raw.get("defaults", {})
    base = _merge(RunConfig(), defaults, f"{path} [defaults]")
    rows_raw = raw.get("row", [])
    if not isinstance(rows_raw, list) or not rows_raw:
        raise ConfigError(f"{path}: no [[row]] entries")
    rows = [_row(r, base, i) for i, r in enumerate(rows_raw)]
    by_name: dict[str, RowSpec] = {}
    for row in rows:
        if row.name in by_name:
            raise ConfigError(f"{path}: two rows are named {row.name!r}")
        by_name[row.name] = row
    for row in rows:
        if row.baseline_from is not None:
            _check_baseline(row, by_name)
    return Grid(path, str(raw.get("title", "Robustness matrix")), tuple(rows))


def load_grid(path: str | Path) -> Grid:
    return parse_grid(load_toml(path), str(path))


def select(grid: Grid, rows: list[str] | None, families: list[str] | None) -> Grid:
    """The grid restricted to the named rows and families (both filters apply when given)."""
    names = [r.name for r in grid.rows]
    for n in rows or []:
        if n not in names:
            raise _unknown("row", n, names, "--rows")
    for f in families or []:
        if f not in grid.families:
            raise _unknown("family", f, grid.families, "--families")
    kept = tuple(r for r in grid.rows if (not rows or r.name in rows)
                 and (not families or r.family in families))
    if not kept:
        raise ConfigError("--rows and --families select no row together")
    return replace(grid, rows=kept)


@dataclass(frozen=True)
class Use:
    """One (row, method, seed) cell: the run it needs, by cache key."""

    row: str
    label: str
    seed: int
    key: str


def run_key(cfg: RunConfig) -> str:
    """Short hash of the whole resolved config (method and seed included) + CACHE_VERSION:
    two rows resolving to the same config share one run, and a changed knob default re-runs."""
    text = json.dumps({"cache": CACHE_VERSION, "config": cfg.to_dict()}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan(grid: Grid, full: Grid, seeds: int) -> tuple[list[Use], dict[str, Job]]:
    """Cells of the selected rows (FedIT of a ``baseline_from`` row borrowed from ``full``) and
    the distinct jobs they need, keyed by ``run_key``, in first-use order."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    uses: list[Use] = []
    jobs: dict[str, Job] = {}

    def add(row: RowSpec, m: MethodSpec, seed: int, as_row: str) -> None:
        job = job_for(m.method, row.cfg, seed, extra=m.set)
        job = replace(job, label=m.label, value=row.name)
        key = run_key(job.cfg)
        jobs.setdefault(key, job)
        uses.append(Use(as_row, m.label, seed, key))

    for row in grid.rows:
        for seed in (row.cfg.fed.seed + i for i in range(seeds)):
            if row.baseline_from:
                ref = full.row(row.baseline_from)
                add(ref, next(m for m in ref.methods if m.label == BASELINE), seed, row.name)
            for m in row.methods:
                add(row, m, seed, row.name)
    return uses, jobs


def cost(job: Job) -> float:
    """Rough relative cost (token-steps) used to start long runs first under --workers."""
    c, f = job.cfg, job.cfg.fed
    sampled = max(1, round(f.clients * f.participation))
    return f.rounds * sampled * f.local_steps * f.batch_size * c.model.max_seq_len
