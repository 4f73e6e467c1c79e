"""segdet's compiled operators, drop-in compatible with torchvision.ops where both have the op.

Error contract, the same for every op (roi_align, _roi_align_backward, nms, batched_nms,
decode_boxes, paste_masks, paste_masks_crops, check_image), whether called through these wrappers, as ``torch.ops.segdet.*``, or
traced by ``torch.compile``/``torch.export`` (the fake kernels run the same checks):

* ``ValueError``: a wrong rank or shape, a bad size or value (``output_size <= 0``, weights that
  are not finite and positive, a negative image size, ...), or tensors on different devices.
  A device mismatch is a ValueError, not torch's RuntimeError, so that every mistake in the
  arguments is a ValueError or a TypeError and RuntimeError is left to failures of the op itself.
* ``TypeError``: an unsupported dtype, dtypes that must agree and do not, or a Python argument of
  the wrong type (a list where a Tensor is expected, a float output_size).

Messages start with the op's name and name the argument and the shape or value expected. Each
check is written once: tensor checks in C++ (``detail::check_*`` in csrc/ops/<op>.h, run first by
every backend's kernel and, through ``segdet._C.check_*``, by the fake kernels), Python-type checks
in the wrapper. The one check that reads tensor data, roi_align's batch index, is the CPU kernel's.
"""
from . import check_image as _check_image  # noqa: F401  (fake kernel of the exported models' input check)
from .decode_boxes import decode_boxes
from .nms import batched_nms, nms
from .paste_masks import paste_masks, paste_masks_aligned, paste_masks_aligned_crops, paste_masks_crops
from .roi_align import RoIAlign, roi_align

__all__ = ["RoIAlign", "batched_nms", "decode_boxes", "library_path", "nms", "paste_masks", "paste_masks_aligned",
           "paste_masks_aligned_crops", "paste_masks_crops", "roi_align"]


def library_path() -> str:
    """Path of the shared library holding segdet's compiled ops: ``torch.ops.load_library(library_path())``
    registers ``torch.ops.segdet.*`` in a process that does not import segdet (e.g. to run an exported
    ``.pt2`` package)."""
    from segdet import _C

    return _C.__file__
