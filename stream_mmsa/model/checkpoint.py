"""Self-contained checkpoints: the config, the weights (τ and the MI bank included), extras.

Loading needs only this package's model code: the file holds the ModelConfig as a plain
dict and is read with `weights_only=True`, so `extra` must be plain data (dicts, lists,
strings, numbers, tensors): train config, label scale, metrics, model-card text.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .fusion import FusionModel

FORMAT = "stream_mmsa.fusion/1"
log = logging.getLogger(__name__)


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s state dict detached onto the CPU: what a checkpoint stores."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(
    path: str | Path, model: FusionModel, extra: dict[str, Any] | None = None
) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "config": model.config.model_dump(),
        "state_dict": cpu_state(model),
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[FusionModel, dict[str, Any]]:
    """-> (model in eval mode on map_location, extra)."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint")
    model = fusion_from_state(ModelConfig.model_validate(blob["config"]), blob["state_dict"], path)
    return model.to(map_location).eval(), blob["extra"]


def fusion_from_state(config: ModelConfig, state: dict[str, Any], path: str | Path) -> FusionModel:
    """A fusion model of `config` holding `state` (upgraded if saved by an older version)."""
    model = FusionModel(config)
    model.load_state_dict(_upgrade(state, model, path))
    return model


def _upgrade(state: dict[str, Any], model: FusionModel, path: str | Path) -> dict[str, Any]:
    """Weights saved before evaluate-then-generate, made loadable.

    Their evaluator read imagined features, which no longer exist before it runs: it is
    left fresh and its gate closed (τ = +inf, never imagine) until `fit_evaluator` runs.
    Their multi-level prompt connection had a last level that never reached the output,
    and a Rank-N-Contrast projection (removed: its loss never left its floor).
    """
    own = model.state_dict()
    evaluator = [k for k in own if k.startswith("evaluator.")]
    if any(k not in state or state[k].shape != own[k].shape for k in evaluator):
        log.warning("%s: evaluator from an older format; its gate stays closed", path)
        state = {k: v for k, v in state.items() if not k.startswith("evaluator.")}
        state |= {k: own[k] for k in evaluator}
        state["tau"] = torch.full_like(own["tau"], math.inf)
    state = {k: v for k, v in state.items() if not k.startswith("rnc_proj.")}
    alpha = "prompts.alpha"
    if alpha in state and alpha in own and state[alpha].shape != own[alpha].shape:
        state[alpha] = state[alpha][: own[alpha].shape[0]]
    if alpha in state and alpha not in own:
        state = {k: v for k, v in state.items() if k != alpha}
    return state
