"""varedit's ComfyUI node pack: VAR inpaint, outpaint, class edit, upscale, generate and class inference.

Put a folder with a one-line ``__init__.py`` into ``ComfyUI/custom_nodes`` (README, "ComfyUI")::

    from varedit_plugins.comfyui import *   # noqa: F401,F403

The pack registers both ways ComfyUI loads packs:

* ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``: classic node classes (every ComfyUI);
* ``comfy_entrypoint()``: a ``ComfyExtension`` listing the same nodes as ``comfy_api`` schema nodes.
  It exists only when ``comfy_api`` imports (inside a ComfyUI that has it). ComfyUI's loader uses the
  mappings when a module has both, so a shim that wants the schema registration imports only
  ``comfy_entrypoint``.
"""
from __future__ import annotations

from typing import Any

from .loader import MODEL_CACHE, ModelCache, VarEditModel, load_model  # noqa: F401 (the Python API)
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, NODES  # noqa: F401

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

try:
    from comfy_api.latest import ComfyExtension as _ComfyExtension
    from comfy_api.latest import io as _io
except ImportError:  # not inside ComfyUI, or a ComfyUI without the schema API: the mappings serve
    _ComfyExtension = None

if _ComfyExtension is not None:
    class VarEditExtension(_ComfyExtension):  # type: ignore[misc, valid-type]
        """The varedit nodes as ``comfy_api`` schema nodes."""

        async def get_node_list(self) -> list[Any]:
            from .v3 import schema_nodes
            return schema_nodes(_io)

    async def comfy_entrypoint() -> Any:
        return VarEditExtension()

    __all__ += ["comfy_entrypoint"]
