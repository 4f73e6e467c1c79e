"""Hypothesis fuzzing of every op against its pure-PyTorch reference.

The slow profile: 1000 examples per op over random shapes, dtypes and layouts, extreme and
non-finite coordinates and empty inputs, on every device present. Each per-op test file checks
the common cases in depth; this file looks for the inputs nobody thought of. CI runs it.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import segdet.ops as ops
from segdet.ops._reference import (
    batched_nms_reference,
    decode_boxes_reference,
    nms_reference,
    roi_align_reference,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FUZZ = settings(max_examples=1000, deadline=None)

NON_FINITE = [math.nan, math.inf, -math.inf]
EXTREME = [1e30, -1e30, 1e6, -1e6, 3.4e38]


def coordinate(low: float, high: float, wild: bool):
    values = st.floats(low, high, allow_nan=False, allow_infinity=False, width=32)
    if wild:
        values = st.one_of(values, st.sampled_from(NON_FINITE + EXTREME))
    return values


@st.composite
def roi_align_case(draw):
    n = draw(st.integers(1, 2))
    c = draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    k = draw(st.integers(0, 3))
    wild = draw(st.booleans())
    rois = []
    for _ in range(k):
        x1, y1 = draw(coordinate(-4, 8, wild)), draw(coordinate(-4, 8, wild))
        bw, bh = draw(st.floats(0, 6, width=32)), draw(st.floats(0, 6, width=32))
        rois.append([float(draw(st.integers(0, n - 1))), x1, y1, x1 + bw, y1 + bh])
    return dict(
        n=n, c=c, h=h, w=w, rois=rois,
        pooled=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        sampling_ratio=draw(st.sampled_from([-1, 0, 1, 2, 3])),
        aligned=draw(st.booleans()),
        spatial_scale=draw(st.sampled_from([0.25, 0.5, 1.0])),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        channels_last=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@FUZZ
@given(case=roi_align_case())
def test_roi_align_fuzz(device, case):
    gen = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["n"], case["c"], case["h"], case["w"], generator=gen, dtype=case["dtype"])
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor(case["rois"], dtype=case["dtype"]).reshape(-1, 5)
    args = (case["pooled"], case["spatial_scale"], case["sampling_ratio"], case["aligned"])

    xd = x.detach().clone().to(device).requires_grad_(True)
    out = ops.roi_align(xd, rois.to(device), *args)
    assert out.shape == (rois.shape[0], case["c"], *case["pooled"])
    out.sum().backward()
    assert xd.grad.shape == x.shape

    finite = bool(torch.isfinite(rois).all()) and bool((rois[:, 1:].abs() < 1e5).all())
    if finite:
        expected = roi_align_reference(x, rois, *args)
        tol = 1e-5 if case["dtype"] == torch.float32 else 1e-10
        torch.testing.assert_close(out.detach().cpu(), expected, atol=tol, rtol=tol)
        if out.numel() == 0:
            assert torch.all(xd.grad == 0)
        else:
            xr = x.detach().clone().requires_grad_(True)
            # + 0 * sum keeps the graph connected when no RoI has a sample (aligned empty boxes).
            (roi_align_reference(xr, rois, *args).sum() + 0 * xr.sum()).backward()
            torch.testing.assert_close(xd.grad.cpu(), xr.grad, atol=tol * 10, rtol=tol * 10)
    else:
        # A RoI with a non-finite coordinate has no samples: zeros out, no gradient.
        bad = ~torch.isfinite(rois[:, 1:]).all(dim=1)
        assert torch.all(out.detach().cpu()[bad] == 0)
        assert torch.isfinite(xd.grad).all()


@st.composite
def nms_case(draw):
    n = draw(st.integers(0, 40))
    integer = draw(st.booleans())  # integer coordinates give many exact IoU ties
    wild = draw(st.integers(0, 4)) == 0
    boxes = []
    for _ in range(n):
        if integer:
            x1, y1 = draw(st.integers(0, 6)), draw(st.integers(0, 6))
            boxes.append([x1, y1, x1 + draw(st.integers(0, 5)), y1 + draw(st.integers(0, 5))])
        else:
            x1, y1 = draw(coordinate(-10, 30, wild)), draw(coordinate(-10, 30, wild))
            boxes.append([x1, y1, x1 + draw(st.floats(0, 20, width=32)), y1 + draw(st.floats(0, 20, width=32))])
    score_values = st.sampled_from([0.1, 0.5, 0.9]) if draw(st.booleans()) else st.floats(0, 1, width=32)
    scores = [draw(score_values) for _ in range(n)]
    return dict(
        boxes=boxes, scores=scores,
        idxs=[draw(st.integers(0, 3)) for _ in range(n)],
        threshold=draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]) | st.floats(0, 1)),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
    )


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@FUZZ
@given(case=nms_case())
def test_nms_fuzz(device, case):
    boxes = torch.tensor(case["boxes"], dtype=case["dtype"]).reshape(-1, 4)
    scores = torch.tensor(case["scores"], dtype=case["dtype"])
    idxs = torch.tensor(case["idxs"], dtype=torch.int64)
    thr = case["threshold"]

    keep = ops.nms(boxes.to(device), scores.to(device), thr).cpu()
    assert keep.dtype == torch.int64
    assert torch.equal(keep, nms_reference(boxes, scores, thr))

    keep = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), thr).cpu()
    assert torch.equal(keep, batched_nms_reference(boxes, scores, idxs, thr))


@st.composite
def decode_case(draw):
    n = draw(st.integers(0, 12))
    k = draw(st.integers(1, 3))
    wild = draw(st.booleans())
    deltas = [[draw(coordinate(-5, 5, wild)) for _ in range(4 * k)] for _ in range(n)]
    boxes = []
    for _ in range(n):
        x1, y1 = draw(coordinate(-50, 500, wild)), draw(coordinate(-50, 500, wild))
        boxes.append([x1, y1, x1 + draw(st.floats(0, 300, width=32)), y1 + draw(st.floats(0, 300, width=32))])
    size = draw(st.none() | st.tuples(st.integers(1, 800), st.integers(1, 800)))
    return dict(
        deltas=deltas, boxes=boxes, k=k, image_size=size,
        weights=draw(st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 7.0)])),
        clip=draw(st.sampled_from([math.log(1000.0 / 16), 1.0, 10.0])),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
    )


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@FUZZ
@given(case=decode_case())
def test_decode_boxes_fuzz(device, case):
    rel = torch.tensor(case["deltas"], dtype=case["dtype"]).reshape(-1, 4 * case["k"])
    boxes = torch.tensor(case["boxes"], dtype=case["dtype"]).reshape(-1, 4)
    kwargs = dict(weights=case["weights"], bbox_xform_clip=case["clip"], image_size=case["image_size"])
    out = ops.decode_boxes(rel.to(device), boxes.to(device), **kwargs).cpu()
    expected = decode_boxes_reference(rel, boxes, **kwargs)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-4, equal_nan=True)
