"""A small synthetic bird dataset in CUB-200-2011 layout, for the demo and the tests.

Every class is a "species": the same bird silhouette, told apart by fine-grained attributes
(body colour, wing colour, wing pattern, beak colour), like CUB's species. Each image varies the
pose (position, size, tilt), the background and the lighting, so a student has to learn the
attributes, not the pixels. Usage: ``python -m distill synthetic data/synthetic-birds``.
"""
from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BODY = {"Crimson": (200, 30, 40), "Azure": (40, 110, 210), "Golden": (225, 185, 30),
        "Olive": (110, 130, 40), "Slate": (95, 100, 115), "Rufous": (170, 80, 30)}
WING = {"Black": (20, 20, 25), "White": (235, 235, 235), "Teal": (20, 150, 150)}
PATTERN = ("barred", "plain")
BEAK = {"Ivory": (240, 230, 200), "Orange": (240, 130, 20)}
KIND = ("Finch", "Warbler", "Tanager", "Sparrow", "Vireo", "Wren")


def species(num_classes: int) -> list[tuple[str, dict]]:
    """The first ``num_classes`` attribute combinations, with CUB-style folder names."""
    combos = itertools.product(BODY, WING, PATTERN, BEAK)
    out = []
    for i, (body, wing, pattern, beak) in enumerate(itertools.islice(combos, 0, None, 5)):
        if len(out) == num_classes:
            break
        name = f"{i + 1:03d}.{body}_{wing.lower()}winged_{KIND[i % len(KIND)]}"
        out.append((name, {"body": BODY[body], "wing": WING[wing], "pattern": pattern, "beak": BEAK[beak]}))
    if len(out) < num_classes:
        raise ValueError(f"at most {len(out)} synthetic classes are available")
    return out


def draw_bird(attrs: dict, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    top, bottom = rng.integers(60, 230, 3), rng.integers(30, 200, 3)
    ramp = np.linspace(0, 1, h)[:, None, None]
    bg = (top * (1 - ramp) + bottom * ramp).repeat(w, axis=1).astype(np.uint8)
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    s = min(w, h) * rng.uniform(0.45, 0.75)  # bird size
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.4, 0.6)
    jitter = lambda c: tuple(int(np.clip(v + rng.integers(-18, 19), 0, 255)) for v in c)  # noqa: E731
    body, wing = jitter(attrs["body"]), jitter(attrs["wing"])
    d.ellipse([cx - s / 2, cy - s / 4, cx + s / 2, cy + s / 4], fill=body)  # body
    hx, hy, hr = cx + s * 0.45, cy - s * 0.22, s * 0.17
    d.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=body)  # head
    d.polygon([(hx + hr * 0.8, hy - hr * 0.3), (hx + hr * 2.0, hy), (hx + hr * 0.8, hy + hr * 0.3)],
              fill=jitter(attrs["beak"]))
    d.ellipse([hx + hr * 0.2, hy - hr * 0.45, hx + hr * 0.5, hy - hr * 0.15], fill=(10, 10, 10))  # eye
    wing_box = [cx - s * 0.3, cy - s * 0.18, cx + s * 0.2, cy + s * 0.12]
    d.ellipse(wing_box, fill=wing)
    if attrs["pattern"] == "barred":
        for k in range(4):
            x = wing_box[0] + (k + 1) * (wing_box[2] - wing_box[0]) / 5
            d.line([x, wing_box[1] + 2, x, wing_box[3] - 2], fill=body, width=max(1, int(s / 30)))
    d.polygon([(cx - s / 2, cy), (cx - s * 0.8, cy - s * 0.12), (cx - s * 0.8, cy + s * 0.12)], fill=wing)  # tail
    img = img.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR, fillcolor=tuple(bottom.tolist()))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.8))))


def generate(root: str | Path, num_classes: int = 10, train_per_class: int = 40,
             test_per_class: int = 15, seed: int = 0, size_range: tuple[int, int] = (72, 128)) -> Path:
    """Write the dataset at ``root`` (atomically: a temporary folder renamed at the end)."""
    root = Path(root)
    if (root / "images.txt").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    rng = np.random.default_rng(seed)
    classes, images, labels, split = [], [], [], []
    for c, (name, attrs) in enumerate(species(num_classes), start=1):
        classes.append(f"{c} {name}")
        (tmp / "images" / name).mkdir(parents=True)
        for k in range(train_per_class + test_per_class):
            size = tuple(int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
            rel = f"{name}/{name.split('.', 1)[1]}_{k:04d}.jpg"
            draw_bird(attrs, rng, size).save(tmp / "images" / rel, quality=92)
            images.append(rel)
            labels.append(c)
            split.append(1 if k < train_per_class else 0)
    _write_lists(tmp, classes, images, labels, split)
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


def _write_lists(root: Path, classes: list[str], images: list[str], labels: list[int], split: list[int]) -> None:
    ids = range(1, len(images) + 1)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in zip(ids, images)))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {y}\n" for i, y in zip(ids, labels)))
    (root / "train_test_split.txt").write_text("".join(f"{i} {s}\n" for i, s in zip(ids, split)))
