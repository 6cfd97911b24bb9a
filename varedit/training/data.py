"""Training data: image folders and the synthetic shapes, with a resumable, rank-sharded order.

Every item is addressed by a key ``(index, aug_seed)`` rather than an index alone: the sampler
derives ``aug_seed`` from ``(seed, epoch, index)``, so the random crop and flip of a sample depend
on nothing but that key.  The same run therefore sees the same pixels with any number of loader
workers, ranks, or restarts.

The order itself is a pure function of ``(seed, epoch)`` (one permutation per epoch) and of the
global step, never of a DataLoader's shuffle state: a run resumed at step s reads exactly the batches
the uninterrupted run would have read from step s on.  A global batch is cut into equal contiguous
shards, one per rank, so the sequence of global batches does not depend on the world size either.

Augmentation follows the official VAR recipe: resize the shorter side to ``resize_ratio`` x the
target (1.125 by default, LANCZOS), random crop to the target, optional horizontal flip, map to
[-1, 1].
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..data.synthetic import SyntheticShapes

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
Key = tuple[int, int]  # (dataset index, augmentation seed)


@dataclass
class DataConfig:
    data_dir: str | None = None        # ImageNet-style folder (one subfolder per class)
    synthetic: int = 0                 # or: this many synthetic-shapes images, rendered on the fly
    synthetic_seed: int = 0
    num_classes: int | None = None     # synthetic only: use the first K classes
    image_size: int = 128
    resize_ratio: float = 1.125        # shorter side is resized to ratio x image_size before the crop
    hflip: bool = True
    photo_crops: int = 0               # add this many crops of the CC0 training photos (varedit.data.photos)


def _mix(*xs: int) -> int:
    """A well-spread 63-bit seed from a few integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(x) & 0xFFFFFFFFFFFFFFFF for x in xs]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def augment(img: Image.Image, size: int, resize_ratio: float, hflip: bool, aug_seed: int) -> np.ndarray:
    """Resize the shorter side to round(resize_ratio * size), crop size x size, maybe flip; uint8 HWC."""
    rng = np.random.default_rng(aug_seed)
    mid = max(size, round(resize_ratio * size))
    w, h = img.size
    if min(w, h) != mid:
        s = mid / min(w, h)
        img = img.resize((max(mid, round(w * s)), max(mid, round(h * s))), Image.Resampling.LANCZOS)
    w, h = img.size
    x0 = int(rng.integers(0, w - size + 1))
    y0 = int(rng.integers(0, h - size + 1))
    arr = np.asarray(img.crop((x0, y0, x0 + size, y0 + size)))
    if hflip and rng.random() < 0.5:
        arr = arr[:, ::-1]
    return arr


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>``: classes are the sorted subfolder names, labels their positions."""

    def __init__(self, root: str | Path, size: int, resize_ratio: float = 1.125, hflip: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data folder not found: {self.root}")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise ValueError(f"{self.root} has no class subfolders (expected root/<class>/<images>)")
        self.samples: list[tuple[Path, int]] = []
        for label, folder in enumerate(folders):
            files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            self.samples += [(f, label) for f in files]
        if not self.samples:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {self.root}")
        self.folders = [f.name for f in folders]
        self.class_names = self._class_names()
        self.size, self.resize_ratio, self.hflip = size, resize_ratio, hflip
        log.info("image folder %s: %d images in %d classes", self.root, len(self.samples), len(folders))

    def _class_names(self) -> list[str]:
        # write_image_folder() records the plain names ("circle" for folder "00_circle")
        meta = self.root / "classes.json"
        if meta.is_file():
            try:
                d = json.loads(meta.read_text())
                if d.get("folders") == self.folders and len(d.get("classes", [])) == len(self.folders):
                    return list(d["classes"])
            except (ValueError, AttributeError):
                log.warning("ignoring unreadable %s", meta)
        return list(self.folders)

    @property
    def num_classes(self) -> int:
        return len(self.folders)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        i, aug_seed = key
        path, label = self.samples[i]
        with Image.open(path) as im:
            img = im.convert("RGB")
        return to_tensor(augment(img, self.size, self.resize_ratio, self.hflip, aug_seed)), label


class SyntheticDataset(Dataset):
    """:class:`SyntheticShapes` rendered on the fly at ``resize_ratio`` x the target size.

    Rendering directly at the larger size stands in for the resize step: the generator draws the same
    picture at every size, only sharper than a resampled one.
    """

    def __init__(self, n: int, seed: int, size: int, resize_ratio: float = 1.125, hflip: bool = True,
                 num_classes: int | None = None):
        self.size, self.resize_ratio, self.hflip = size, resize_ratio, hflip
        self.shapes = SyntheticShapes(n, seed=seed, size=max(size, round(resize_ratio * size)),
                                      num_classes=num_classes)
        self.class_names = list(self.shapes.class_names)

    @property
    def num_classes(self) -> int:
        return self.shapes.num_classes

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        i, aug_seed = key
        arr, label = self.shapes[i]
        return to_tensor(augment(Image.fromarray(arr), self.size, self.resize_ratio, self.hflip, aug_seed)), label


class PhotoCropsDataset(Dataset):
    """Random crops of the CC0 / public-domain training photos of :mod:`varedit.data.photos` (never the
    benchmark's held-out ones): item ``(i, aug_seed)`` is photo ``i % n_photos``, with crop side, position
    and flip drawn from ``aug_seed``.  Labels are -1: for tokenizer training only."""

    def __init__(self, n: int, size: int, hflip: bool = True):
        from ..data.photos import TRAIN, load_photo
        self.n, self.size, self.hflip = n, size, hflip
        self.names = TRAIN
        for name in self.names:  # fail now, with the install hint, rather than in the loop
            load_photo(name)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        from ..data.photos import load_photo, random_crop
        i, aug_seed = key
        img = load_photo(self.names[i % len(self.names)])
        return to_tensor(random_crop(img, self.size, np.random.default_rng(aug_seed), hflip=self.hflip)), -1


class KeyedConcat(Dataset):
    """Datasets addressed by ``(index, aug_seed)`` keys, one after the other."""

    def __init__(self, parts: Sequence[Dataset]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])  # type: ignore[arg-type]
        self.class_names = list(getattr(self.parts[0], "class_names", []))

    @property
    def num_classes(self) -> int:
        return int(getattr(self.parts[0], "num_classes", 0))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        i, aug_seed = key
        j = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.parts[j][(i - int(self.offsets[j]), aug_seed)]


def build_dataset(cfg: DataConfig) -> ImageFolderDataset | SyntheticDataset | KeyedConcat:
    if cfg.data_dir and cfg.synthetic:
        raise ValueError("give either a data folder or a synthetic dataset size, not both")
    if cfg.data_dir:
        base: ImageFolderDataset | SyntheticDataset = ImageFolderDataset(cfg.data_dir, cfg.image_size,
                                                                          cfg.resize_ratio, cfg.hflip)
    elif cfg.synthetic > 0:
        base = SyntheticDataset(cfg.synthetic, cfg.synthetic_seed, cfg.image_size, cfg.resize_ratio, cfg.hflip,
                                cfg.num_classes)
    else:
        raise ValueError("no training data: give a data folder (--data DIR) or a synthetic size (--synthetic N)")
    if cfg.photo_crops > 0:
        return KeyedConcat([base, PhotoCropsDataset(cfg.photo_crops, cfg.image_size, cfg.hflip)])
    return base


class ResumableBatchSampler(Sampler[list[Key]]):
    """Yields this rank's share of global batch ``step`` for steps ``start_step .. total_steps - 1``.

    Epoch e is ``randperm(n)`` under a generator seeded from ``(seed, e)``; an epoch holds
    ``n // global_batch`` global batches (the remainder is left out for that epoch, as drop_last does).
    """

    def __init__(self, n: int, global_batch: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, total_steps: int = 0):
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by the {world_size} processes")
        if n < global_batch:
            raise ValueError(f"the dataset has {n} items, fewer than one batch of {global_batch}")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch = global_batch // world_size
        self.steps_per_epoch = n // global_batch
        self.start_step, self.total_steps = start_step, total_steps
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5A17))
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def global_indices(self, step: int) -> list[int]:
        epoch, j = divmod(step, self.steps_per_epoch)
        return self.permutation(epoch)[j * self.global_batch:(j + 1) * self.global_batch].tolist()

    def keys(self, step: int) -> list[Key]:
        epoch = step // self.steps_per_epoch
        idx = self.global_indices(step)[self.rank * self.local_batch:(self.rank + 1) * self.local_batch]
        return [(i, _mix(self.seed, epoch, i)) for i in idx]

    def __iter__(self) -> Iterator[list[Key]]:
        for step in range(self.start_step, self.total_steps):
            yield self.keys(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def collate(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, labels = zip(*batch)
    return torch.stack(imgs), torch.tensor(labels, dtype=torch.int64)
