"""The exported adapter's identity: a portable base-model name and a filled model card.

peft writes the base model as the path it was loaded from, which for the bundled bases or a
user's folder is an absolute path on the training machine, and its README is an empty template.
An adapter that leaves the machine needs a name another machine can resolve and a card that says
what produced it: the method, what was sent, for how many rounds, on which data, with which
result.
"""

from __future__ import annotations

import math
from pathlib import Path

BUNDLED = ("embedded", "realtext")


def portable_base(name: str) -> str:
    """The base model as a name that means the same everywhere.

    ``embedded``/``realtext`` (the bundled bases) and hub names stay as they are; a local
    folder becomes its folder name, never an absolute path.
    """
    if name in BUNDLED:
        return name
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists() or name.startswith((".", "~")):
        return path.resolve().name or name
    return name


def _is_hub_name(base: str, given: str) -> bool:
    return base not in BUNDLED and base == given and not Path(given).exists()


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "n/a" if x is None else format(x, fmt)


def model_card(summary: dict, base: str) -> str:
    """README.md for the adapter folder, from a run's ``summary.json`` content."""
    cfg = summary["config"]
    data, fed, model, comp = cfg["data"], cfg["fed"], cfg["model"], cfg["compress"]
    given = model["name"]
    front = ["---", "library_name: peft", "tags:", "- lora", "- federated-learning", "- ecolora",
             f"- {summary['method']}"]
    if _is_hub_name(base, given):
        front.append(f"base_model: {base}")
    front.append("---")
    if base in BUNDLED:
        where = (f"`{base}`, the base bundled with ecolora (`ecolora.train.model`; load it "
                 "with ecolora's loader)")
    elif _is_hub_name(base, given):
        where = f"`{base}` on the Hugging Face hub"
    else:
        where = f"a local model folder named `{base}`"
    what = "preference accuracy" if fed["objective"] == "dpo" else "exact match"
    up, down = summary["total_upload_bytes"], summary["total_download_bytes"]
    rounds = summary["rounds"]
    lines = front + [
        "", f"# LoRA adapter: {summary['method']}, federated over {fed['clients']} clients", "",
        f"A LoRA adapter (rank {model['lora_r']}, alpha {model['lora_alpha']:g}) for {where}, "
        f"trained with federated learning by ecolora's `{summary['method']}` method. Load it "
        "with `PeftModel.from_pretrained(base_model, this_folder)`.", "",
        "## Training", "",
        "| | |", "|---|---|",
        f"| method | `{summary['method']}` |",
        f"| objective | {fed['objective']} |",
        f"| rounds | {rounds} |",
        f"| clients | {fed['clients']} (participation {fed['participation']:g}) |",
        f"| local steps per round | {fed['local_steps']} of batch {fed['batch_size']} |",
        f"| data | `{data['dataset']}` ({data['partition']} partition) |",
        f"| eval data | `{data['eval_dataset'] or 'held out from the data'}` |",
        f"| segments, rho_A, rho_B | {comp['num_segments']}, {comp['rho_a']:g}, "
        f"{comp['rho_b']:g} (as configured; each method applies its own overrides) |",
        f"| seed | {fed['seed']} |", "",
        "## Communication", "",
        f"- Uploaded by all clients: {up:,} bytes ({up / 1e6:.3f} MB), "
        f"{summary['total_upload_nonzeros']:,} values.",
        f"- Downloaded by all clients: {down:,} bytes ({down / 1e6:.3f} MB).",
        f"- Modeled communication time {summary['comm_time_s']:.1f} s; measured compute "
        f"{summary['compute_time_s']:.1f} s.", "",
        "## Results (eval set)", "",
        f"- Final {what}: {_pct(summary['final_eval_accuracy'])} (base "
        f"{_pct(summary['initial_eval_accuracy'])}, best {_pct(summary['best_eval_accuracy'])}).",
        f"- Final eval loss: {_num(summary['final_eval_loss'])} (base "
        f"{_num(summary['initial_eval_loss'])}).", "",
        "Produced by ecolora; the run folder's `summary.json` and `metrics.jsonl` hold every "
        "number above, per round.", ""]
    return "\n".join(lines)
