import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
logging.getLogger("lightning.fabric").setLevel(logging.WARNING)

REPO = Path(__file__).resolve().parents[1]
LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))


@pytest.fixture
def write_images(tmp_path):
    """Write a small ImageFolder: {class: [array, ...]} -> tmp_path/images/<class>/<i>.png."""
    from PIL import Image

    def write(classes: dict[str, list[np.ndarray]], root: Path | None = None) -> Path:
        root = root or tmp_path / "images"
        for name, images in classes.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            for i, array in enumerate(images):
                Image.fromarray(array).save(root / name / f"{i}.png")
        return root

    return write


def quiet_trainer(tmp_path, **kwargs):
    import lightning as L

    defaults = dict(
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**defaults, **kwargs})
