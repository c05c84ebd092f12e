"""Fashion-MNIST (Xiao et al., 2017) written as an image folder for the real-data benchmark.

Real images, offline: Debian's ``dataset-fashion-mnist`` package installs the IDX files under
/usr/share/datasets/fashion-mnist; online, torchvision downloads the same files. The folder
holds ``train/<class>/`` with ``per_class`` images per class drawn (seeded) from the 60,000
training images, and ``test/<class>/`` with ``test_per_class`` images per class from the 10,000
test images, as 28x28 grey PNGs. The class folders are named so that ``clean_class_name`` gives
the class name used in the prompts ("07.Sneaker" -> "Sneaker").
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt or top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
PROMPTS = ("a photo of a {}, a type of clothing.", "a black and white photo of a {}.",
           "a low resolution photo of a {}.")


def find_idx(download_root: Path) -> Path:
    """The folder holding the four IDX files: Debian's package, or a torchvision download."""
    if all((DEBIAN_DIR / f).is_file() for pair in FILES.values() for f in pair):
        return DEBIAN_DIR
    raw = download_root / "FashionMNIST" / "raw"
    if not all((raw / f).is_file() for pair in FILES.values() for f in pair):
        try:
            from torchvision.datasets import FashionMNIST
            FashionMNIST(str(download_root), download=True)
        except Exception as exc:  # offline: say how to get the files instead
            raise SystemExit(
                f"Fashion-MNIST not found ({type(exc).__name__}): install Debian's package "
                f"(apt-get install dataset-fashion-mnist, files in {DEBIAN_DIR}) or put the four IDX .gz "
                f"files into {raw}") from None
    return raw


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _pick(labels: np.ndarray, per_class: int, seed: int, skip: int = 0) -> list[int]:
    """``per_class`` indices per class, after the first ``skip`` of the same seeded order: the
    training images of every regime are prefixes of one order, so ``skip`` past the largest gives
    images none of them trains on."""
    rng = np.random.default_rng(seed)
    return sorted(i for c in range(len(CLASSES))
                  for i in rng.permutation(np.flatnonzero(labels == c))[skip:skip + per_class])


# The largest regime trains on the first 200 per class of the seeded order; a dev split starts after.
DEV_SKIP = 200


def write_dev_folder(out: Path, per_class: int = 100, seed: int = 0, download_root: Path = Path("data")) -> Path:
    """``out/<class>/*.png``: ``per_class`` Fashion-MNIST *training* images per class that no regime
    trains on (for choosing a recipe without the test images); an existing complete folder is reused."""
    return _write_pngs(out, [("train", "", per_class, DEV_SKIP)], seed, download_root,
                       f"per_class={per_class} seed={seed} skip={DEV_SKIP}")


# The unlabeled pool starts after the dev split: no regime trains on it, no recipe is chosen on it.
POOL_SKIP = DEV_SKIP + 100


def write_pool_folder(out: Path, per_class: int = 500, seed: int = 0, download_root: Path = Path("data")) -> Path:
    """``out/*.png``: ``per_class`` Fashion-MNIST *training* images per class that no regime trains on and
    the dev split does not hold, in one flat folder: the labels are dropped (the file names hold the IDX
    index only); an existing complete folder is reused."""
    return _write_pngs(out, [("train", None, per_class, POOL_SKIP)], seed, download_root,
                       f"unlabeled per_class={per_class} seed={seed} skip={POOL_SKIP}")


def write_folder(out: Path, per_class: int, test_per_class: int = 100, seed: int = 0,
                 download_root: Path = Path("data")) -> Path:
    """Write ``out/{train,test}/<class>/*.png`` once; an existing complete folder is reused."""
    return _write_pngs(out, [("train", "train", per_class, 0), ("test", "test", test_per_class, 0)], seed,
                       download_root, f"per_class={per_class} test_per_class={test_per_class} seed={seed}")


def _write_pngs(out: Path, parts: list[tuple[str, str | None, int, int]], seed: int, download_root: Path,
                note: str) -> Path:
    """Write the images ``parts`` pick, each (IDX split, subfolder, per class, skip), as
    ``out/<subfolder>/<class>/*.png`` (subfolder None: ``out/*.png``, unlabeled) into a temporary folder
    renamed at the end; reuse a complete one."""
    if (out / ".complete").is_file():
        return out
    idx_dir = find_idx(download_root)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, sub, count, skip in parts:
        images, labels = (read_idx(idx_dir / f) for f in FILES[split])
        for i in _pick(labels, count, seed, skip):
            folder = tmp if sub is None else tmp / sub / f"{labels[i]:02d}.{CLASSES[labels[i]].replace(' ', '_')}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{split}_{i:05d}.png")
    (tmp / ".complete").write_text(note + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
