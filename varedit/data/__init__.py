"""Data utilities for varedit: the procedural synthetic-shapes dataset."""

from varedit.data.synthetic import (
    CLASS_NAMES,
    MIN_SIZE,
    NUM_CLASSES,
    SyntheticShapes,
    class_folder_name,
    item_seed,
    preview_grid,
    render,
    write_image_folder,
)

__all__ = [
    "CLASS_NAMES",
    "MIN_SIZE",
    "NUM_CLASSES",
    "SyntheticShapes",
    "class_folder_name",
    "item_seed",
    "preview_grid",
    "render",
    "write_image_folder",
]
