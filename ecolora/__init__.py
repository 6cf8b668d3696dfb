"""ecolora: communication-efficient federated LoRA fine-tuning (EcoLoRA, FedIT, baselines).

Layers, bottom to top (imports point one way):
  compress/, methods/   pure numpy: segments, sparsification, Golomb-Rice, wire, aggregation
  data/, train/         datasets, prompts, model + LoRA, local training and evaluation
  runtime/              the round loop: in-process simulation
  report/, cli/         results on disk, plots, the `ecolora` command
"""

__version__ = "0.1.0"
