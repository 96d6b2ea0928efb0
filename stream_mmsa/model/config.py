"""Validated hyper-parameters of the fusion model and the weights of its training loss.

Both are embedded in the root config as the `model:` and `loss:` sections; unknown keys
fail loudly so a typo in a YAML file or an override never goes unnoticed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .types import MODALITIES

DEFAULT_INPUT_DIMS: dict[str, int] = {"text": 384, "audio": 74, "vision": 35}


class ModelConfig(BaseModel):
    """Shape of the network. Defaults are sized for the 2-core CPU budget (see DESIGN.md).

    use_prompts=False removes shared/private/missing-type prompts, the prompt weighting and
    the multi-level prompt connection (the "no prompts" ablation); dynamic_weighting and
    multilevel_prompts switch off one of those two mechanisms alone.
    """

    model_config = ConfigDict(extra="forbid")

    input_dims: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_INPUT_DIMS))
    d_model: int = Field(32, ge=8, le=512, description="common width d of every stream")
    heads: int = Field(2, ge=1, le=16)
    cross_layers: int = Field(1, ge=1, le=8, description="layers per cross-modal pair")
    self_layers: int = Field(2, ge=1, le=8, description="self-attention layers per target")
    ff_mult: int = Field(2, ge=1, le=8, description="feed-forward width as a multiple of d")
    prompt_len: int = Field(4, ge=1, le=64, description="tokens per prompt")
    imagine_len: int = Field(8, ge=1, le=64, description="tokens per imagined modality")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    use_prompts: bool = True
    dynamic_weighting: bool = True
    multilevel_prompts: bool = True
    critic_dim: int = Field(16, ge=2, le=256, description="rank of the bilinear MI critic")
    mi_bank_size: int = Field(64, ge=1, le=4096, description="reference samples for the MI")
    evaluator_hidden: int = Field(64, ge=4, le=1024)
    score_activation: Literal["tanh", "clamp"] = "tanh"

    @field_validator("input_dims")
    @classmethod
    def _three_modalities(cls, dims: dict[str, int]) -> dict[str, int]:
        if set(dims) != set(MODALITIES):
            raise ValueError(
                f"input_dims keys must be exactly {list(MODALITIES)}, got {list(dims)}"
            )
        bad = {m: d for m, d in dims.items() if d < 1}
        if bad:
            raise ValueError(f"input_dims must be positive, got {bad}")
        return {m: int(dims[m]) for m in MODALITIES}

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
        return self


class LossWeights(BaseModel):
    """Weights of the training loss terms plus the few knobs that shape them.

    A weight of 0 removes the term from "total" (it is still logged).
    """

    model_config = ConfigDict(extra="forbid")

    task_loss: Literal["l1", "smooth_l1"] = "l1"
    task_complete: float = Field(1.0, ge=0.0, description="task loss of the complete flow")
    task_missing: float = Field(1.0, ge=0.0, description="task loss of the missing flow")
    distill_feature: float = Field(0.5, ge=0.0, description="fused/stream feature distance")
    disentangle: float = Field(0.1, ge=0.0, description="prompt similarity + difference")
    imagine_recon: float = Field(0.5, ge=0.0, description="imagined vs real pooled features")
    mi_critic: float = Field(0.1, ge=0.0, description="InfoNCE of the MI critic")
    confidence: float = Field(0.1, ge=0.0, description="Laplace NLL of the confidence head")
    imagine_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="chance a missing modality is imagined in training"
    )
