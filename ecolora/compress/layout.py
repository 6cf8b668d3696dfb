"""The ordered list of LoRA tensors that every stage agrees on (peft's `adapter_layer_names` idea).

Segmentation, A/B-specific sparsity and the wire format all refer to tensors by their index in
one ``AdapterLayout``, so no module re-derives names and a payload cannot name a tensor the
receiver does not have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod

from ecolora.errors import ConfigError

_LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def kind(self) -> str:
        """'A' (down-projection, random init) or 'B' (up-projection, zero init) or 'other'."""
        if "lora_A" in self.name:
            return "A"
        if "lora_B" in self.name:
            return "B"
        return "other"

    @property
    def layer(self) -> int:
        """Transformer block index parsed from the name (-1 when there is none)."""
        m = _LAYER.search(self.name)
        return int(m.group(1)) if m else -1


@dataclass(frozen=True)
class AdapterLayout:
    tensors: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        if not self.tensors:
            raise ConfigError("the model has no LoRA tensors to train")
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise ConfigError("duplicate LoRA tensor names in layout")

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> AdapterLayout:
        return cls(tuple(TensorSpec(n, tuple(s)) for n, s in shapes.items()))

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors)
