"""The dataset a checkpoint was trained on, as export and quantization-aware training read it."""
from __future__ import annotations

import dataclasses

from formats.checkpoint import StudentMeta
from formats.datasets import DatasetSplits, load_splits
from formats.errors import UserError


def training_splits(meta: StudentMeta, data_root: str | None) -> DatasetSplits:
    """The dataset the student was trained on (same split seed), optionally at another root."""
    import torchvision.datasets

    spec = meta.dataset if data_root is None else dataclasses.replace(meta.dataset, root=str(data_root))
    try:
        splits = load_splits(spec, torchvision.datasets)
    except UserError as exc:
        raise UserError(f"{exc} (export reads the training dataset for calibration and evaluation; "
                        f"pass --data-root if it moved)") from None
    if tuple(splits.class_names) != meta.class_names:
        raise UserError(f"the dataset at {spec.root} has different classes than the checkpoint: "
                        f"pass --data-root pointing at the dataset the student was trained on")
    return splits
