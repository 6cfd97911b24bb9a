"""A small CNN that recognises the synthetic classes; its penultimate features define the
Fréchet distance used to judge generated and inpainted images (an FID in a space that fits the domain:
no pretrained Inception weights are reachable here, and ImageNet features would not fit it anyway)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.synthetic import NUM_CLASSES, SyntheticShapes

log = logging.getLogger(__name__)
INPUT = 64


class ShapeClassifier(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 32, feat_dim: int = 128):
        super().__init__()
        c = width

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(block(3, c), block(c, 2 * c), block(2 * c, 4 * c), block(4 * c, 4 * c))
        self.feat = nn.Linear(4 * c, feat_dim)
        self.head = nn.Linear(feat_dim, num_classes)

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        if x_B3HW.shape[-1] != INPUT:
            x_B3HW = F.interpolate(x_B3HW, size=(INPUT, INPUT), mode="area")
        h = self.body(x_B3HW).mean(dim=(2, 3))  # global average: position-invariant
        return F.relu(self.feat(h))

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_B3HW))


def to_tensor(images_uint8: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.stack(list(images_uint8))).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x


def _batch(ds: SyntheticShapes, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, labels = zip(*(ds[int(i)] for i in idx))
    return to_tensor(imgs), torch.tensor(labels)


def train_classifier(*, n: int = 6000, size: int = 128, steps: int = 600, batch: int = 64, seed: int = 1234,
                     lr: float = 2e-3, n_heldout: int = 1000) -> tuple[ShapeClassifier, dict[str, float]]:
    """Train on synthetic images of seed ``seed`` (disjoint from the demo model's and the eval's); the
    accuracy is measured on ``n_heldout`` images of seed ``seed + 1``."""
    torch.manual_seed(seed)
    ds = SyntheticShapes(n, seed=seed, size=size)
    held = SyntheticShapes(n_heldout, seed=seed + 1, size=size)
    model = ShapeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    rng = np.random.default_rng(seed)
    cache = [ds[i] for i in range(n)]  # render once
    imgs = to_tensor([c[0] for c in cache])
    labels = torch.tensor([c[1] for c in cache])
    model.train()
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, n, batch))
        x = imgs[idx]
        if step % 2:
            x = x.flip(-1)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            log.info("classifier step %d loss %.4f", step, loss.item())
    model.eval()
    acc = accuracy(model, [held[i][0] for i in range(len(held))], [held[i][1] for i in range(len(held))])
    return model, {"heldout_accuracy": acc, "train_images": n, "heldout_images": n_heldout, "steps": steps,
                   "seed": seed}


@torch.no_grad()
def predict(model: ShapeClassifier, images: list[np.ndarray], batch: int = 100) -> np.ndarray:
    out = []
    for s in range(0, len(images), batch):
        out.append(model(to_tensor(images[s:s + batch])).argmax(1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def features(model: ShapeClassifier, images: list[np.ndarray], batch: int = 100) -> np.ndarray:
    out = []
    for s in range(0, len(images), batch):
        out.append(model.features(to_tensor(images[s:s + batch])).numpy())
    return np.concatenate(out)


def accuracy(model: ShapeClassifier, images: list[np.ndarray], labels: list[int]) -> float:
    return float((predict(model, images) == np.asarray(labels)).mean())


def save_classifier(model: ShapeClassifier, path: str | Path, info: dict[str, float]) -> None:
    from ..io import atomic_write_with
    obj = {"format": "varedit-classifier", "state_dict": model.state_dict(), "info": info}
    atomic_write_with(path, lambda f: torch.save(obj, f))


def load_classifier(path: str | Path) -> tuple[ShapeClassifier, dict[str, float]]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    m = ShapeClassifier()
    m.load_state_dict(obj["state_dict"])
    return m.eval(), dict(obj.get("info", {}))
