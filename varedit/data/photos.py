"""Real photographs that ship inside scikit-image's wheel (``skimage/data``), for training crops and for the
real-photo benchmark (``varedit eval --real``).

Only pictures whose licence scikit-image states as CC0 or public domain are used (the licence of each,
as scikit-image's documentation gives it, is in :data:`PHOTOS`).  They are split by picture: the
benchmark's held-out photos are never seen in training.  The files are read straight from the
installed package (``pip install "varedit[photos]"`` installs scikit-image); nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

INSTALL_HINT = 'the real photographs come from scikit-image\'s package data: pip install "varedit[photos]"'


@dataclass(frozen=True)
class Photo:
    name: str
    file: str          # inside skimage/data
    licence: str       # as scikit-image's documentation states it
    credit: str
    heldout: bool      # True: the benchmark's; never used for training


PHOTOS: tuple[Photo, ...] = (
    # held out: the real-photo benchmark and the showcase
    Photo("astronaut", "astronaut.png", "public domain (no known copyright restrictions)",
          "NASA (Eileen Collins), NASA Great Images database", True),
    Photo("chelsea", "chelsea.png", "CC0", "Stefan van der Walt", True),
    Photo("coffee", "coffee.png", "CC0", "Rachel Michetti", True),
    Photo("rocket", "rocket.jpg", "public domain", "SpaceX", True),
    # training crops
    Photo("hubble_deep_field", "hubble_deep_field.jpg", "public domain", "NASA", False),
    Photo("retina", "retina.jpg", "CC0 1.0", "Mikael Häggström (Wikimedia Commons)", False),
    Photo("immunohistochemistry", "ihc.png", "no known copyright restrictions",
          "Center for Microscopy And Molecular Imaging (CMMI)", False),
    Photo("camera", "camera.png", "CC0", "Lav Varshney", False),
    Photo("brick", "brick.png", "CC0", "CC0Textures (Bricks25)", False),
    Photo("grass", "grass.png", "CC0", "DeviantArt user linolafett (Grass-01)", False),
    Photo("gravel", "gravel.png", "CC0", "CC0Textures (Gravel04)", False),
    Photo("coins", "coins.png", "no known copyright restrictions", "Brooklyn Museum Collection", False),
    Photo("clock", "clock_motion.png", "public domain", "Stefan van der Walt", False),
    Photo("cell", "cell.png", "CC0", "a quantitative phase image made with qpformat (scikit-image data)", False),
)
HELDOUT = tuple(p.name for p in PHOTOS if p.heldout)
TRAIN = tuple(p.name for p in PHOTOS if not p.heldout)


def data_dir() -> Path:
    """``skimage/data`` of the installed scikit-image, located without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(INSTALL_HINT)
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not d.is_dir():
        raise ImportError(f"{INSTALL_HINT} ({d} is missing)")
    return d


def photos_available() -> bool:
    try:
        d = data_dir()
    except ImportError:
        return False
    return all((d / p.file).is_file() for p in PHOTOS)


def photo_info(name: str) -> Photo:
    for p in PHOTOS:
        if p.name == name:
            return p
    raise ValueError(f"unknown photo {name!r}; known: {', '.join(p.name for p in PHOTOS)}")


@lru_cache(maxsize=32)
def load_photo(name: str) -> np.ndarray:
    """The photo as (H, W, 3) uint8 RGB (grey pictures repeated over the channels, alpha dropped)."""
    p = photo_info(name)
    path = data_dir() / p.file
    if not path.is_file():
        raise ImportError(f"{INSTALL_HINT} ({path} is missing)")
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    arr.setflags(write=False)
    return arr


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator, min_frac: float = 0.25,
                hflip: bool = True) -> np.ndarray:
    """A square crop whose side is between ``min_frac`` of the shorter side (at least ``size``) and the
    whole shorter side, resized to ``size`` (area averaging), randomly placed and flipped."""
    h, w = img.shape[:2]
    short = min(h, w)
    lo = min(short, max(size, int(round(min_frac * short))))
    side = int(rng.integers(lo, short + 1))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img[y0:y0 + side, x0:x0 + side]
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BOX if side > size
                                                        else Image.Resampling.LANCZOS))
    if hflip and rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)
