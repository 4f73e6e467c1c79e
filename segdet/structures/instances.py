"""``Instances``: the per-image set of objects (ground truth, proposals or predictions) passed between heads.

Fields follow a naming convention so a reader knows where a tensor came from: ``gt_*`` for annotations,
``proposal_*`` for RPN outputs and ``pred_*`` for final predictions. Every field holds one entry per
instance along its first dimension; the container checks that, so indexing keeps them aligned.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["Instances"]


class Instances:
    """Per-image instance fields of equal length.

    Args:
        image_size: (height, width) in pixels of the image the boxes/masks refer to.
        **fields: field name -> value with ``len(value) == number of instances``. The fields the model uses
            (boxes are (x1, y1, x2, y2) absolute pixels of ``image_size`` unless said otherwise):

            - ground truth (``MaskRCNN`` builds them from the targets): ``gt_boxes`` float Tensor[M, 4],
              ``gt_classes`` int64 Tensor[M] in 1..K, ``gt_masks`` uint8/bool Tensor[M, Hm, Wm] at the input
              image's resolution (which may differ from ``image_size``);
            - RPN output: ``proposal_boxes`` Tensor[P, 4], ``objectness_logits`` Tensor[P];
            - sampled RoIs (``label_and_sample_proposals``): ``proposal_boxes``, ``gt_classes`` (0 = background),
              ``gt_boxes`` (the matched box) and ``gt_index`` int64 Tensor[R] (the matched row of ``gt_masks``);
            - predictions: ``pred_boxes`` Tensor[D, 4], ``scores`` Tensor[D], ``pred_classes`` int64 Tensor[D]
              in 1..K, ``pred_masks`` float Tensor[D, S, S] probabilities in box coordinates.

            Values may be tensors or anything that supports ``len`` and indexing (lists index only with ints,
            slices, bool/int64 tensors).

    Fields are read and written as attributes (``inst.gt_boxes``) or with ``get``/``set``.
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any) -> None:
        if len(image_size) != 2:
            raise ValueError(f"image_size must be (height, width), got {image_size!r}")
        object.__setattr__(self, "_image_size", (int(image_size[0]), int(image_size[1])))
        object.__setattr__(self, "_fields", {})
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self._image_size

    # Attribute access maps onto fields so heads can write ``inst.pred_boxes = boxes``.
    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for fields.
        fields = self.__dict__.get("_fields")
        if fields is None or name not in fields:
            raise AttributeError(f"Instances has no field {name!r}; fields are {sorted(fields or [])}")
        return fields[name]

    def __delattr__(self, name: str) -> None:
        self.remove(name)

    def set(self, name: str, value: Any) -> None:
        """Set field ``name``; its length must match the existing fields."""
        if not name or name.startswith("_"):
            raise ValueError(f"field name must be non-empty and not start with '_', got {name!r}")
        if hasattr(type(self), name):
            raise ValueError(f"{name!r} is an Instances attribute/method and cannot be a field name")
        try:
            n = len(value)
        except TypeError as exc:
            raise TypeError(f"field {name!r} must support len(), got {type(value).__name__}") from exc
        if isinstance(value, Tensor) and value.dim() == 0:
            raise ValueError(f"field {name!r} must have one entry per instance, got a 0-d tensor")
        if self._fields and n != len(self):
            raise ValueError(f"field {name!r} has length {n} but the Instances has {len(self)} instances")
        self._fields[name] = value

    def get(self, name: str, default: Any = None) -> Any:
        """Field ``name``, or ``default`` when absent."""
        return self._fields.get(name, default)

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        if name not in self._fields:
            raise KeyError(f"Instances has no field {name!r}")
        del self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        """The name -> value dict (a shallow copy)."""
        return dict(self._fields)

    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        return 0

    def __iter__(self) -> Iterator:
        raise TypeError("Instances is not iterable; index it or read its fields")

    def __contains__(self, name: str) -> bool:
        return name in self._fields

    def __getitem__(self, item: int | slice | Tensor) -> "Instances":
        """Select instances with an int, a slice, a bool Tensor[N] mask or an int64 index tensor."""
        if isinstance(item, int):
            n = len(self)
            if item >= n or item < -n:
                raise IndexError(f"Instances index {item} out of range for {n} instances")
            item = slice(item, None, n) if item >= 0 else slice(item + n, None, n)
        if isinstance(item, Tensor) and item.dtype == torch.bool and item.shape != (len(self),):
            raise IndexError(f"bool index must have shape [{len(self)}], got {tuple(item.shape)}")
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            out.set(name, _index(value, item))
        return out

    def to(self, *args: Any, **kwargs: Any) -> "Instances":
        """A copy with every tensor field moved/cast via ``Tensor.to`` (non-tensor fields are shared)."""
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            if hasattr(value, "to"):
                value = value.to(*args, **kwargs)
            out.set(name, value)
        return out

    @staticmethod
    def cat(instances: list["Instances"]) -> "Instances":
        """Concatenate ``Instances`` of the same image (same image_size and field names)."""
        if not instances:
            raise ValueError("Instances.cat needs at least one Instances")
        for i, inst in enumerate(instances):
            if not isinstance(inst, Instances):
                raise TypeError(f"instances[{i}] must be Instances, got {type(inst).__name__}")
        first = instances[0]
        names = set(first._fields)
        for i, inst in enumerate(instances[1:], start=1):
            if inst.image_size != first.image_size:
                raise ValueError(
                    f"instances[{i}] has image_size {inst.image_size}, expected {first.image_size}"
                )
            if set(inst._fields) != names:
                raise ValueError(
                    f"instances[{i}] has fields {sorted(inst._fields)}, expected {sorted(names)}"
                )
        out = Instances(first.image_size)
        for name in first._fields:
            values = [inst._fields[name] for inst in instances]
            if isinstance(values[0], Tensor):
                out.set(name, torch.cat(values, dim=0))
            elif isinstance(values[0], list):
                out.set(name, [v for value in values for v in value])
            else:
                raise TypeError(f"cannot concatenate field {name!r} of type {type(values[0]).__name__}")
        return out

    def __repr__(self) -> str:
        parts = [f"num_instances={len(self)}", f"image_size={self._image_size}"]
        for name, value in self._fields.items():
            desc = f"Tensor{list(value.shape)} {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
            parts.append(f"{name}: {desc}")
        return "Instances(" + ", ".join(parts) + ")"


def _index(value: Any, item: slice | Tensor) -> Any:
    if isinstance(value, Tensor) or not isinstance(item, Tensor):
        return value[item]
    # Python sequences cannot take tensor indices; turn masks into positions first.
    if item.dtype == torch.bool:
        item = item.nonzero().flatten()
    return [value[i] for i in item.tolist()]
