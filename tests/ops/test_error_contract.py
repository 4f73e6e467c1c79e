"""The ops' error contract (segdet/ops/__init__.py), one table for every op.

Each row is one mistake in one argument of one op. It is fed to the op on real tensors
(``torch.ops.segdet.*``, the C++ kernel's checks), to the Python wrapper, and to the fake kernel
under FakeTensorMode, with static and with symbolic shapes (what torch.compile/export run); every
path must raise the row's exception type with a message that names the argument, and the fake
kernel's message must be the kernel's.
"""
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import segdet.ops as ops

HAS_CUDA = torch.cuda.is_available()

OPS = {
    "roi_align": torch.ops.segdet.roi_align.default,
    "_roi_align_backward": torch.ops.segdet._roi_align_backward.default,
    "nms": torch.ops.segdet.nms.default,
    "batched_nms": torch.ops.segdet.batched_nms.default,
    "decode_boxes": torch.ops.segdet.decode_boxes.default,
    "paste_masks": torch.ops.segdet.paste_masks.default,
}



def roi_align_wrapper(x, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    # A tuple in pooled_height stands for a whole (wrong) output_size.
    size = pooled_height if isinstance(pooled_height, tuple) else (pooled_height, pooled_width)
    return ops.roi_align(x, rois, size, spatial_scale, sampling_ratio, aligned)


# The wrapper of each op, called with the op's arguments in schema order.
WRAPPERS = {
    "roi_align": roi_align_wrapper,
    "_roi_align_backward": None,  # internal: reached only through roi_align's autograd
    "nms": ops.nms,
    "batched_nms": ops.batched_nms,
    "decode_boxes": ops.decode_boxes,
    "paste_masks": ops.paste_masks,
}


def good_args(op: str) -> list:
    """Valid arguments of each op, in schema order (built inside FakeTensorMode for the fake runs)."""
    z = torch.zeros
    return {
        "roi_align": [z(2, 3, 8, 8), z(4, 5), 1.0, 2, 3, -1, False],
        "_roi_align_backward": [z(4, 3, 2, 3), z(4, 5), 1.0, 2, 3, 2, 3, 8, 8, -1, False],
        "nms": [z(4, 4), z(4), 0.5],
        "batched_nms": [z(4, 4), z(4), z(4, dtype=torch.int64), 0.5],
        "decode_boxes": [z(4, 8), z(4, 4), [1.0, 1.0, 1.0, 1.0], 4.0, [10, 20]],
        "paste_masks": [z(4, 7, 7), z(4, 4), 10, 12, 0.5],
    }[op]


OP, WRAPPER, FAKE, FAKE_DYNAMIC = "op", "wrapper", "fake", "fake_dynamic"
TENSOR_PATHS = (OP, WRAPPER, FAKE, FAKE_DYNAMIC)
DATA_PATHS = (OP, WRAPPER)  # a check that reads tensor data: no fake kernel can make it
PYTHON_PATHS = (WRAPPER,)  # Python argument types: the schema rejects them before any kernel


@dataclass
class Mistake:
    op: str
    id: str
    arg: int  # index of the wrong argument in schema order
    wrong: Callable[[Any], Any] | None  # good argument -> wrong one; None: the tensor moves to another device
    exc: type
    names: str  # regex that the message must match: the argument's name
    paths: tuple = TENSOR_PATHS

    @property
    def device(self) -> bool:
        return self.wrong is None

    def args(self, other_device: str = "cuda") -> list:
        args = good_args(self.op)
        args[self.arg] = args[self.arg].to(other_device) if self.device else self.wrong(args[self.arg])
        return args


M = Mistake
MISTAKES = [
    # roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    M("roi_align", "input rank", 0, lambda t: t[0], ValueError, r"input must be a Tensor\[N, C, H, W\]"),
    M("roi_align", "input dtype", 0, lambda t: t.int(), TypeError, r"input must be float32"),
    M("roi_align", "map too large", 0, lambda t: t[:1, :1, :1, :1].expand(1, 1, 2**31, 1), ValueError,
      r"input height and width must be below 2\^31"),
    M("roi_align", "rois width", 1, lambda t: t[:, :4], ValueError, r"rois must be a Tensor\[K, 5\]"),
    M("roi_align", "rois rank", 1, lambda t: t[0], ValueError, r"rois must be a Tensor\[K, 5\]"),
    M("roi_align", "rois dtype", 1, lambda t: t.double(), TypeError, r"rois dtype \(Double\) must match input"),
    M("roi_align", "rois device", 1, None, ValueError, r"rois device .* must match input device"),
    M("roi_align", "pooled_height", 3, lambda v: 0, ValueError, r"output_size must be positive.*pooled_height=0"),
    M("roi_align", "pooled_width", 4, lambda v: -1, ValueError, r"output_size must be positive.*pooled_width=-1"),
    M("roi_align", "batch index", 1, lambda t: t + torch.tensor([2.0, 0, 0, 0, 0]), ValueError,
      r"rois\[0, 0\] = 2 is not a batch index", DATA_PATHS),
    M("roi_align", "nan batch index", 1, lambda t: t + torch.tensor([math.nan, 0, 0, 0, 0]), ValueError,
      r"rois\[0, 0\] = nan is not a batch index", DATA_PATHS),
    M("roi_align", "input not a tensor", 0, lambda t: t.numpy(), TypeError, r"input must be a Tensor", PYTHON_PATHS),
    M("roi_align", "boxes not a tensor", 1, lambda t: t.numpy(), TypeError, r"boxes must be a Tensor", PYTHON_PATHS),
    M("roi_align", "boxes list item", 1, lambda t: [t[:, 1:], t], ValueError, r"boxes\[1\] must be a Tensor\[L, 4\]",
      PYTHON_PATHS),
    M("roi_align", "output_size float", 3, lambda v: 2.5, TypeError, r"output_size must hold ints", PYTHON_PATHS),
    M("roi_align", "output_size triple", 3, lambda v: (v, v, v), ValueError, r"output_size must be an int or a pair",
      PYTHON_PATHS),
    # _roi_align_backward(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
    #                     height, width, sampling_ratio, aligned)
    M("_roi_align_backward", "grad shape", 0, lambda t: t[:, :, :, :2], ValueError,
      r"grad must be a Tensor\[K, C, pooled_height, pooled_width\] = \["),
    M("_roi_align_backward", "grad rows", 0, lambda t: t[:3], ValueError, r"grad must be a Tensor\[K, C"),
    M("_roi_align_backward", "grad rank", 0, lambda t: t[0], ValueError, r"grad must be a Tensor\[K, C"),
    M("_roi_align_backward", "grad dtype", 0, lambda t: t.long(), TypeError, r"grad must be float32"),
    M("_roi_align_backward", "rois width", 1, lambda t: t[:, 1:], ValueError, r"rois must be a Tensor\[K, 5\]"),
    M("_roi_align_backward", "rois dtype", 1, lambda t: t.half(), TypeError, r"rois dtype \(Half\) must match grad"),
    M("_roi_align_backward", "rois device", 1, None, ValueError, r"rois device .* must match grad"),
    M("_roi_align_backward", "pooled_height", 3, lambda v: 0, ValueError, r"output_size must be positive"),
    M("_roi_align_backward", "batch_size", 5, lambda v: -2, ValueError,
      r"\(batch_size, channels, height, width\) must be non-negative, got \(-2, "),
    M("_roi_align_backward", "width", 8, lambda v: 2**31, ValueError, r"height and width must be below 2\^31"),
    M("_roi_align_backward", "batch index", 1, lambda t: t + torch.tensor([2.0, 0, 0, 0, 0]), ValueError,
      r"rois\[0, 0\] = 2 is not a batch index", (OP,)),
    # nms(dets, scores, iou_threshold): messages name the op's argument, dets (the wrapper's boxes)
    M("nms", "dets width", 0, lambda t: t[:, :3], ValueError, r"dets must be a 2-D tensor \[N, 4\]"),
    M("nms", "dets rank", 0, lambda t: t.flatten(), ValueError, r"dets must be a 2-D tensor \[N, 4\]"),
    M("nms", "dets dtype", 0, lambda t: t.long(), TypeError, r"dets must be float64, float32"),
    M("nms", "scores rank", 1, lambda t: t[:, None], ValueError, r"scores must be a 1-D tensor \[N\]"),
    M("nms", "scores length", 1, lambda t: t[:3], ValueError, r"dets has \S+ rows but scores has \S+ elements"),
    M("nms", "scores dtype", 1, lambda t: t.double(), TypeError, r"scores dtype \(Double\) must match dets"),
    M("nms", "scores device", 1, None, ValueError, r"scores device .* must match dets device"),
    M("nms", "boxes not a tensor", 0, lambda t: t.tolist(), TypeError, r"boxes must be a torch.Tensor", PYTHON_PATHS),
    M("nms", "iou_threshold str", 2, lambda v: "0.5", TypeError, r"iou_threshold must be a real number",
      PYTHON_PATHS),
    # batched_nms(boxes, scores, idxs, iou_threshold)
    M("batched_nms", "boxes width", 0, lambda t: t[:, :3], ValueError, r"boxes must be a 2-D tensor \[N, 4\]"),
    M("batched_nms", "scores length", 1, lambda t: t[:1], ValueError,
      r"boxes has \S+ rows but scores has \S+ elements"),
    M("batched_nms", "scores dtype", 1, lambda t: t.half(), TypeError, r"scores dtype \(Half\)"),
    M("batched_nms", "idxs length", 2, lambda t: t[:3], ValueError, r"idxs must be a 1-D tensor \[N\]"),
    M("batched_nms", "idxs rank", 2, lambda t: t[None], ValueError, r"idxs must be a 1-D tensor \[N\]"),
    M("batched_nms", "idxs float", 2, lambda t: t.float(), TypeError, r"idxs must be an integer tensor"),
    M("batched_nms", "idxs bool", 2, lambda t: t.bool(), TypeError, r"idxs must be an integer tensor"),
    M("batched_nms", "idxs device", 2, None, ValueError, r"idxs device .* must match boxes device"),
    M("batched_nms", "idxs list", 2, lambda t: t.tolist(), TypeError, r"idxs must be a torch.Tensor", PYTHON_PATHS),
    # decode_boxes(rel_codes, boxes, weights, bbox_xform_clip, image_size)
    M("decode_boxes", "rel_codes width", 0, lambda t: t[:, :6], ValueError,
      r"rel_codes must be a 2-D tensor \[N, 4\*K\]"),
    M("decode_boxes", "rel_codes rank", 0, lambda t: t[0], ValueError, r"rel_codes must be a 2-D tensor"),
    M("decode_boxes", "rel_codes rows", 0, lambda t: t[:3], ValueError, r"rel_codes has \S+ rows but boxes has \S+;"),
    M("decode_boxes", "rel_codes dtype", 0, lambda t: t.long(), TypeError, r"rel_codes must be float64"),
    M("decode_boxes", "boxes width", 1, lambda t: t[:, :3], ValueError, r"boxes must be a 2-D tensor \[N, 4\]"),
    M("decode_boxes", "boxes dtype", 1, lambda t: t.double(), TypeError,
      r"boxes dtype \(Double\) must match rel_codes"),
    M("decode_boxes", "boxes device", 1, None, ValueError, r"boxes device .* must match rel_codes"),
    M("decode_boxes", "weights count", 2, lambda v: v[:3], ValueError, r"weights must be 4 numbers"),
    M("decode_boxes", "weights zero", 2, lambda v: [1.0, 0.0, 1.0, 1.0], ValueError,
      r"weights must be finite and positive"),
    M("decode_boxes", "weights inf", 2, lambda v: [1.0, 1.0, math.inf, 1.0], ValueError,
      r"weights must be finite and positive"),
    M("decode_boxes", "bbox_xform_clip nan", 3, lambda v: math.nan, ValueError, r"bbox_xform_clip must not be NaN"),
    M("decode_boxes", "image_size zero", 4, lambda v: [0, 20], ValueError, r"image_size must be two positive ints"),
    M("decode_boxes", "image_size count", 4, lambda v: [10], ValueError, r"image_size must be two positive ints"),
    M("decode_boxes", "weights str", 2, lambda v: "1111", TypeError, r"weights must be 4 numbers", PYTHON_PATHS),
    M("decode_boxes", "weights number", 2, lambda v: 1.0, TypeError, r"weights must be 4 numbers", PYTHON_PATHS),
    M("decode_boxes", "weights item", 2, lambda v: [1.0, "a", 1.0, 1.0], TypeError, r"weights must be 4 numbers",
      PYTHON_PATHS),
    M("decode_boxes", "image_size int", 4, lambda v: 10, TypeError, r"image_size must be two ints", PYTHON_PATHS),
    M("decode_boxes", "clip None", 3, lambda v: None, TypeError, r"bbox_xform_clip must be a number", PYTHON_PATHS),
    M("decode_boxes", "image_size float", 4, lambda v: [10.5, 20], TypeError, r"image_size must be two ints",
      PYTHON_PATHS),
    M("decode_boxes", "boxes list", 1, lambda t: t.tolist(), TypeError, r"boxes must be a torch.Tensor", PYTHON_PATHS),
    # paste_masks(masks, boxes, height, width, threshold)
    M("paste_masks", "masks rank", 0, lambda t: t[0], ValueError, r"masks must be a 3-D tensor \[D, S, S\]"),
    M("paste_masks", "masks not square", 0, lambda t: t[:, :, :5], ValueError, r"masks must be .* square"),
    M("paste_masks", "masks empty side", 0, lambda t: t[:, :0, :0], ValueError, r"masks must be .*\(S > 0\)"),
    M("paste_masks", "masks count", 0, lambda t: t[:3], ValueError, r"masks has \S+ masks but boxes has \S+ rows"),
    M("paste_masks", "masks dtype", 0, lambda t: t.half(), TypeError, r"masks must be float32 or float64"),
    M("paste_masks", "boxes width", 1, lambda t: t[:, :3], ValueError, r"boxes must be a 2-D tensor \[D, 4\]"),
    M("paste_masks", "boxes dtype", 1, lambda t: t.long(), TypeError, r"boxes must be float32 or float64"),
    M("paste_masks", "boxes device", 1, None, ValueError, r"boxes device .* must match masks"),
    M("paste_masks", "height", 2, lambda v: -1, ValueError, r"height and width must be >= 0"),
    M("paste_masks", "width", 3, lambda v: -3, ValueError, r"height and width must be >= 0"),
    M("paste_masks", "masks array", 0, lambda t: t.numpy(), TypeError, r"masks must be a torch.Tensor", PYTHON_PATHS),
    M("paste_masks", "width float", 3, lambda v: 2.5, TypeError, r"width must be an int", PYTHON_PATHS),
    M("paste_masks", "threshold str", 4, lambda v: "0.5", TypeError, r"threshold must be a number", PYTHON_PATHS),
]

CASES = [
    pytest.param(m, path, id=f"{m.op}-{m.id}-{path}")
    for m in MISTAKES
    for path in m.paths
    if not (path == WRAPPER and WRAPPERS[m.op] is None)
]


def raise_on(m: Mistake, path: str) -> BaseException:
    """The exception `path` raises on mistake m (fails the test if it raises none)."""
    try:
        if path in (OP, WRAPPER):
            if m.device and not HAS_CUDA:
                pytest.skip("a device mismatch needs a CUDA device outside FakeTensorMode")
            args = m.args()
            fn = OPS[m.op] if path == OP else WRAPPERS[m.op]
            fn(*args)
        elif path == FAKE:
            # Built inside the mode, so the other device can be CUDA without a GPU.
            with FakeTensorMode():
                OPS[m.op](*m.args())
        else:
            # Symbolic sizes, as torch.compile(dynamic=True) and torch.export trace them; a meta
            # tensor stands in for the second device.
            args = m.args(other_device="meta")
            with FakeTensorMode(shape_env=ShapeEnv(), static_shapes=False) as mode:
                OPS[m.op](*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])
    except Exception as e:  # noqa: BLE001 - the type is what the test checks
        return e
    pytest.fail(f"{m.op} accepted the mistake {m.id!r} on the {path} path")


@pytest.mark.parametrize("mistake,path", CASES)
def test_mistake_raises_the_contract_type_naming_the_argument(mistake, path):
    err = raise_on(mistake, path)
    assert type(err) is mistake.exc, f"{type(err).__name__}: {err}"
    message = str(err)
    assert message.startswith(f"{mistake.op}: ") and re.search(mistake.names, message), message


@pytest.mark.parametrize(
    "mistake", [m for m in MISTAKES if FAKE in m.paths and not m.device], ids=lambda m: f"{m.op}-{m.id}"
)
def test_fake_kernel_message_is_the_kernels(mistake):
    # One check, two callers: the fake kernel reports exactly what the CPU kernel reports.
    assert str(raise_on(mistake, FAKE)) == str(raise_on(mistake, OP))


@pytest.mark.parametrize("op", sorted(OPS))
def test_good_arguments_pass_every_path(op):
    # The rows are mistakes only if the unchanged arguments are accepted.
    OPS[op](*good_args(op))
    if WRAPPERS[op] is not None:
        WRAPPERS[op](*good_args(op))
    with FakeTensorMode():
        if op in ("nms", "batched_nms"):
            # Data-dependent output size: plain FakeTensorMode refuses it after the checks pass.
            with pytest.raises(torch._subclasses.fake_tensor.DynamicOutputShapeException):
                OPS[op](*good_args(op))
        else:
            OPS[op](*good_args(op))
