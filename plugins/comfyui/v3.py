"""The same nodes as ``comfy_api`` schema nodes (``io.ComfyNode``), for ``comfy_entrypoint()``.

Built from each node's :class:`~.nodes.Param` / :class:`~.nodes.Out` declarations and run by the same
``compute``, so the two registrations cannot drift apart. ``io`` is ComfyUI's
``comfy_api.latest.io`` module, passed in: this module imports nothing from ComfyUI itself.
"""
from __future__ import annotations

from typing import Any

from .nodes import MODEL_TYPE, NODES, Out, Param, VarEditNode


def _input(io: Any, p: Param, model_type: Any) -> Any:
    common: dict[str, Any] = {"optional": p.optional}
    if p.tooltip:
        common["tooltip"] = p.tooltip
    if p.kind == "INT":
        return io.Int.Input(p.name, default=p.default, min=p.min, max=p.max, step=p.step,
                            control_after_generate=True if p.seed else None, **common)
    if p.kind == "FLOAT":
        return io.Float.Input(p.name, default=p.default, min=p.min, max=p.max, step=p.step, **common)
    if p.kind == "STRING":
        return io.String.Input(p.name, default=p.default, **common)
    if p.kind == "BOOLEAN":
        return io.Boolean.Input(p.name, default=p.default, **common)
    if p.kind == "COMBO":
        return io.Combo.Input(p.name, options=list(p.options), default=p.default, **common)
    if p.kind == "IMAGE":
        return io.Image.Input(p.name, **common)
    if p.kind == "MASK":
        return io.Mask.Input(p.name, **common)
    if p.kind == MODEL_TYPE:
        return model_type.Input(p.name, **common)
    raise ValueError(f"no comfy_api input for kind {p.kind!r}")


def _output(io: Any, o: Out, model_type: Any) -> Any:
    # no output ids: ComfyUI requires them distinct from the input ids (an input and an output are both
    # called "image"), and the generated ones are; display_name gives the V1 RETURN_NAMES
    kind = {"IMAGE": io.Image, "MASK": io.Mask, "STRING": io.String, "INT": io.Int, "FLOAT": io.Float,
            MODEL_TYPE: model_type}[o.kind]
    return kind.Output(display_name=o.name, tooltip=o.tooltip or None, is_output_list=o.is_list)


def schema_node(io: Any, node: type[VarEditNode], model_type: Any) -> type:
    """The ``io.ComfyNode`` subclass for one node."""

    def define_schema(cls: type) -> Any:
        return io.Schema(node_id=node.NODE_ID, display_name=node.DISPLAY_NAME, category=node.CATEGORY,
                         description=node.DESCRIPTION, inputs=[_input(io, p, model_type) for p in node.PARAMS],
                         outputs=[_output(io, o, model_type) for o in node.OUTPUTS])

    def execute(cls: type, **kw: Any) -> Any:
        return io.NodeOutput(*node.compute(**kw))

    attrs: dict[str, Any] = {"__module__": __name__, "__doc__": node.DESCRIPTION,
                             "define_schema": classmethod(define_schema), "execute": classmethod(execute)}
    if hasattr(node, "fingerprint"):  # the schema API's name for IS_CHANGED
        attrs["fingerprint_inputs"] = classmethod(lambda cls, **kw: node.fingerprint(**kw))
    return type(node.__name__, (io.ComfyNode,), attrs)


def schema_nodes(io: Any) -> list[type]:
    """Every node as an ``io.ComfyNode`` class, sharing one custom ``VAREDIT_MODEL`` type."""
    model_type = io.Custom(MODEL_TYPE)
    return [schema_node(io, n, model_type) for n in NODES]
