"""Server optimizers on the aggregated delta (FedOpt, Reddi et al., ICLR 2021): ecolora's own.

The paper's server adds the mean of the decoded deltas to the global adapter (spec §4.4, §7).
Sparsified, segmented uploads make that mean a damped and delayed copy of FedIT's: an entry
kept by one of five uploaders arrives at a fifth of its size, and error feedback sends the rest
rounds later. A server optimizer treats the aggregated delta as a pseudo-gradient and can win
back the lost step:

- ``sgd``: global += server_lr * delta (the paper's rule at server_lr = 1; FedAvg).
- ``avgm``: FedAvgM (Hsu et al. 2019), v = beta1 * v + delta; global += server_lr * v. At
  server_lr = 1 - beta1 a constant delta moves the global model as much as sgd does, and what
  error feedback delivers late still feeds the same running direction.
- ``adam``: FedAdam, m = beta1 m + (1 - beta1) delta, v = beta2 v + (1 - beta2) delta^2,
  global += server_lr * m / (sqrt(v) + server_eps), with m and v *lazy*: entries that no client
  sent this round keep their moments and take no step (PyTorch's SparseAdam rule), so a segment
  nobody uploaded does not drift on stale moments.

Pure numpy, no I/O: the state lives in ``ServerState`` (checkpointed with the run).
"""

from __future__ import annotations

import numpy as np

from ecolora.config import CompressConfig

Params = list[np.ndarray]


def server_step(delta: Params, state, cfg: CompressConfig, touched: Params | None = None) -> Params:
    """The change to apply to the global adapter for the aggregated ``delta``.

    ``state`` is the method's ``ServerState`` (its ``opt_m``/``opt_v``/``opt_step`` fields are
    created here on first use). ``touched`` marks, per tensor, the entries some client sent this
    round (lazy Adam); None means every entry.
    """
    step = cfg.step
    lr = np.float32(step)
    if cfg.server_opt == "sgd":
        return delta if step == 1.0 else [d * lr for d in delta]
    b1 = np.float32(cfg.server_beta1)
    if state.opt_m is None:
        state.opt_m = [np.zeros_like(d) for d in delta]
    if cfg.server_opt == "avgm":
        for m, d in zip(state.opt_m, delta, strict=True):
            m *= b1
            m += d
        return [m * lr for m in state.opt_m]
    # adam (lazy)
    b2 = np.float32(cfg.server_beta2)
    if state.opt_v is None:
        state.opt_v = [np.zeros_like(d) for d in delta]
    state.opt_step += 1
    out = []
    for i, d in enumerate(delta):
        m, v = state.opt_m[i], state.opt_v[i]
        mask = np.ones(d.shape, bool) if touched is None else touched[i]
        m[mask] = b1 * m[mask] + (1 - b1) * d[mask]
        v[mask] = b2 * v[mask] + (1 - b2) * d[mask] * d[mask]
        step = np.zeros_like(d)
        step[mask] = lr * m[mask] / (np.sqrt(v[mask]) + np.float32(cfg.server_eps))
        out.append(step)
    return out
