"""Tests of the fixes to the CUDA review's findings (issue 10, section 4).

Each finding has a CPU test where the CPU can show it, and a CUDA test (marked `cuda`, skipped
without a GPU) where only a GPU can. The same cases run through the CPU emulator of the CUDA
kernels in tests/emu/ (torch.ops.segdet_emu.*).
  1. roi_align on a map with a zero-size side and a box touching its edge read outside the map.
  2. CUDA nms/batched_nms sorted negative-sign NaN scores (and -0) differently from the CPU.
  3. The atomic CUDA roi_align backward was silently non-deterministic; now the op uses a
     gathering, atomic-free backward under torch.use_deterministic_algorithms(True).
  4. nvcc contracted roi_align's arithmetic into FMAs; float32 CUDA results now equal the CPU's.
  5. The default CUDA arch lists end in +PTX.
  6. The NMS suppression mask is checked against the device memory before it is allocated.
"""
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from segdet.ops import batched_nms, nms
from segdet.ops._reference import nms_reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with this checkout's segdet, so a segfault fails the test
    (returncode -11) instead of killing pytest."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)


# ---- 1. zero-size maps ---------------------------------------------------------------------------

ZERO_MAP_CASES = """
import itertools, torch
import segdet.ops
device = {device!r}
shapes = [(1, 2, 0, 5), (1, 2, 5, 0), (2, 3, 0, 0)]
# Boxes touching or straddling the empty side: aligned=False turns [-1, 0] into a one-pixel RoI whose
# samples sit in [-1, 0], the range that used to clamp to pixel -1.
rois = torch.tensor([[0.0, -1.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 4.0, 0.0], [0.0, -1.0, 0.0, 0.0, 4.0],
                     [0.0, 0.0, 0.0, 0.0, 0.0], [0.0, -0.5, -0.5, 0.5, 0.5]] * 8, device=device)
for shape, aligned, ratio, cl in itertools.product(shapes, (False, True), (0, 2), (False, True)):
    x = torch.randn(shape, device=device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    out = torch.ops.segdet.roi_align(x, rois, 1.0, 3, 2, ratio, aligned)
    assert out.shape == (rois.shape[0], shape[1], 3, 2), out.shape
    assert bool((out == 0).all()), (shape, aligned, ratio)
    grad = torch.randn(out.shape, device=device)
    for deterministic in (False, True):
        torch.use_deterministic_algorithms(deterministic)
        g = torch.ops.segdet._roi_align_backward(grad, rois, 1.0, 3, 2, shape[0], shape[1], shape[2], shape[3],
                                                 ratio, aligned)
        assert g.shape == shape and g.numel() == 0
    torch.use_deterministic_algorithms(False)
x = torch.randn(1, 2, 0, 5, device=device, requires_grad=True)
out = segdet.ops.roi_align(x, rois, output_size=(2, 2), spatial_scale=1.0, sampling_ratio=0, aligned=False)
assert bool((out == 0).all())
out.sum().backward()
assert x.grad.shape == x.shape
if device == "cuda":
    torch.cuda.synchronize()
print("ok")
"""


@pytest.mark.parametrize("device", DEVICES)
def test_roi_align_zero_size_map_with_edge_boxes(device):
    result = run_isolated(ZERO_MAP_CASES.format(device=device))
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


# ---- 2. NaN and signed-zero scores in nms --------------------------------------------------------

def negative_nan() -> float:
    """The NaN that 0/0 or inf - inf gives on x86: sign bit set (0xFFC00000 as float32)."""
    return torch.tensor([0xFFC00000 - (1 << 32)], dtype=torch.int32).view(torch.float32).item()


def nan_case(n=300, dtype=torch.float32):
    """Boxes where the order of NaN and signed-zero scores decides which of two twins survives.

    Pairs (2i, 2i+1) are identical boxes (IoU 1), far from every other pair. Pair 0: -NaN vs 0.9;
    pair 1: +NaN vs -NaN (index order decides); pair 2: -0.0 vs +0.0 (index order decides);
    pair 3: 0.5 vs +NaN. More than 128 boxes, so CUDA sorts with its radix path.
    """
    g = torch.Generator().manual_seed(3)
    centres = torch.arange(n // 2, dtype=torch.float64).repeat_interleave(2) * 50.0
    boxes = torch.stack([centres, centres, centres + 10.0, centres + 10.0], dim=1)
    scores = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    neg_nan = torch.tensor(negative_nan(), dtype=dtype)
    scores[0], scores[1] = neg_nan, 0.9
    scores[2], scores[3] = math.nan, neg_nan
    scores[4], scores[5] = -0.0, 0.0
    scores[6], scores[7] = 0.5, math.nan
    scores[100::37] = neg_nan
    return boxes.to(dtype), scores


def test_cpu_sort_orders_every_nan_first_and_zeros_as_ties():
    # What the CPU kernel does (torch.sort on CPU compares values): the contract the CUDA glue now
    # reproduces with a canonical sort key.
    _, scores = nan_case()
    assert math.copysign(1.0, scores[0].item()) < 0  # really a negative-sign NaN
    order = scores.sort(stable=True, descending=True).indices.tolist()
    nans = torch.nonzero(scores.isnan()).flatten().tolist()
    assert order[: len(nans)] == nans  # every NaN, either sign, first, in index order
    assert order.index(4) < order.index(5)  # -0 ties with +0: index order


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_nms_nan_and_zero_scores_keep_the_cpu_set(device, dtype):
    boxes, scores = nan_case(dtype=dtype)
    expected = nms_reference(boxes.double(), scores.double(), 0.5)
    keep = nms(boxes.to(device), scores.to(device), 0.5).cpu()
    assert torch.equal(keep, expected)
    kept = set(keep.tolist())
    # The -NaN box beats its 0.9 twin, +NaN (index 2) beats -NaN (index 3), -0 (index 4) ties +0
    # and wins by index, +NaN (7) beats 0.5 (6).
    assert {0, 2, 4, 7} <= kept and not {1, 3, 5, 6} & kept
    idxs = torch.zeros(boxes.shape[0], dtype=torch.int64)
    idxs[200:] = 3  # twins stay in one category
    got = batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5).cpu()
    assert torch.equal(got, batched_nms(boxes, scores, idxs, 0.5))


# ---- 3. deterministic roi_align backward on CUDA -------------------------------------------------

def roi_case(seed, n=2, c=5, h=11, w=13, k=60, dtype=torch.float32, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xy = (torch.rand(k, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3) * torch.tensor([w, h])
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h]) * 0.8
    batch = torch.randint(0, n, (k, 1), generator=g).double()
    rois = torch.cat([batch, xy, xy + wh], dim=1)
    # Borderline samples: boxes whose samples land exactly on -1 and on the map size.
    rois[0, 1:] = torch.tensor([-1.5, -1.5, -0.5, -0.5])
    rois[1, 1:] = torch.tensor([w - 0.5, h - 0.5, w + 0.5, h + 0.5])
    rois[2, 1:] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # zero-size box
    rois[3, 0] = 0  # many RoIs of one image overlap: the summation order matters
    return x, rois.to(dtype)


CONFIGS = [(1.0, 2, 2, 0, True), (0.5, 3, 4, 2, False), (1.0, 7, 7, 0, False), (2.0, 2, 3, 3, True)]


@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_deterministic_backward_is_the_cpu_backward(channels_last, dtype):
    torch.use_deterministic_algorithms(True)
    try:
        for seed, (scale, ph, pw, ratio, aligned) in enumerate(CONFIGS):
            x, rois = roi_case(seed, dtype=dtype, channels_last=channels_last)
            grad = torch.randn(rois.shape[0], x.shape[1], ph, pw, generator=torch.Generator().manual_seed(seed))
            grad = grad.to(dtype)
            if channels_last:
                grad = grad.contiguous(memory_format=torch.channels_last)
            args = (scale, ph, pw, *x.shape, ratio, aligned)
            cpu = torch.ops.segdet._roi_align_backward(grad, rois, *args)
            first = torch.ops.segdet._roi_align_backward(grad.cuda(), rois.cuda(), *args)
            second = torch.ops.segdet._roi_align_backward(grad.cuda(), rois.cuda(), *args)
            assert torch.equal(first, second)
            assert torch.equal(first.cpu(), cpu), (seed, (first.cpu() - cpu).abs().max())
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.cuda
def test_cuda_atomic_backward_is_flagged_nondeterministic_and_close():
    # Without the flag the op takes the atomic kernel (the fast one); its sums may differ in the
    # last bits from the CPU's but not more.
    x, rois = roi_case(5)
    grad = torch.randn(rois.shape[0], x.shape[1], 7, 7)
    args = (1.0, 7, 7, *x.shape, 0, True)
    cpu = torch.ops.segdet._roi_align_backward(grad, rois, *args)
    gpu = torch.ops.segdet._roi_align_backward(grad.cuda(), rois.cuda(), *args)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)


# ---- 4. float32 CUDA forward bit-identical to the CPU --------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_forward_float32_is_bit_identical(channels_last):
    for seed, (scale, ph, pw, ratio, aligned) in enumerate(CONFIGS):
        x, rois = roi_case(seed + 10, channels_last=channels_last)
        cpu = torch.ops.segdet.roi_align(x, rois, scale, ph, pw, ratio, aligned)
        gpu = torch.ops.segdet.roi_align(x.cuda(), rois.cuda(), scale, ph, pw, ratio, aligned)
        assert torch.equal(gpu.cpu(), cpu), (seed, (gpu.cpu() - cpu).abs().max())


def test_roi_align_ptx_has_no_contracted_fma(tmp_path):
    """The float32 roi_align kernels compiled WITHOUT -fmad=false hold no fma.rn.f32: every
    multiply-add is explicitly rounded (roi_align_math.h, roi_align_kernels.cuh)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    ptx = tmp_path / "roi_align.ptx"
    subprocess.run([nvcc, "-ptx", "-arch=sm_90", "-std=c++20", "-I", os.path.join(ROOT, "csrc"),
                    os.path.join(ROOT, "csrc", "tests", "ptx_roi_align.cu"), "-o", str(ptx)],
                   check=True, capture_output=True, timeout=300)
    text = ptx.read_text()
    assert len(re.findall(r"^\.visible \.entry", text, flags=re.M)) == 7  # every kernel instantiated
    assert "fma.rn.f32" not in text


def test_build_files_forbid_contraction(monkeypatch):
    sys.path.insert(0, ROOT)
    try:
        import setup
    finally:
        sys.path.remove(ROOT)
    monkeypatch.setenv("FORCE_CUDA", "0")
    (ext,) = setup.get_extensions()
    assert "-ffp-contract=off" in ext.extra_compile_args["cxx"]
    cmake = open(os.path.join(ROOT, "CMakeLists.txt")).read()
    assert re.search(r"add_compile_options\([^)]*-ffp-contract=off[^)]*-fmad=false", cmake)
    cuda_home = setup.find_cuda_home()
    if torch.version.cuda is not None and cuda_home is not None:
        # get_extensions() exports both when unset; monkeypatch restores them after the test.
        monkeypatch.setenv("CUDA_HOME", cuda_home)
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
        monkeypatch.setenv("FORCE_CUDA", "1")
        (ext,) = setup.get_extensions()
        assert "-fmad=false" in ext.extra_compile_args["nvcc"]
        assert "-ffp-contract=off" in ext.extra_compile_args["cxx"]


# ---- 5. +PTX -------------------------------------------------------------------------------------

def test_default_arch_lists_end_with_ptx():
    sys.path.insert(0, ROOT)
    try:
        import setup
    finally:
        sys.path.remove(ROOT)
    assert setup.DEFAULT_CUDA_ARCH_LIST.split(";")[-1].endswith("+PTX")
    cmake = open(os.path.join(ROOT, "CMakeLists.txt")).read()
    (cmake_default,) = re.findall(r'set\(ENV\{TORCH_CUDA_ARCH_LIST\} "([^"]+)"\)', cmake)
    assert cmake_default.split(";")[-1].endswith("+PTX")
    script = open(os.path.join(ROOT, "scripts", "check_cuda_build.sh")).read()
    (script_default,) = re.findall(r'TORCH_CUDA_ARCH_LIST:-"([^"]+)"', script)
    assert script_default.split(";")[-1].endswith("+PTX")


# ---- 6. NMS mask size ----------------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_nms_refuses_a_mask_larger_than_the_device():
    n = 3_000_000  # 562 GB of mask: more than any current GPU
    boxes = torch.rand(n, 4, device="cuda") * 100
    boxes[:, 2:] += boxes[:, :2]
    scores = torch.rand(n, device="cuda")
    with pytest.raises(RuntimeError, match=r"nms: 3000000 boxes need a suppression mask of 562\d+ bytes"):
        nms(boxes, scores, 0.5)
    with pytest.raises(RuntimeError, match=r"batched_nms: 3000000 boxes need a suppression mask"):
        batched_nms(boxes, scores, torch.zeros(n, dtype=torch.int64, device="cuda"), 0.5)
    # Many categories keep the grouped mask small: the same boxes then run.
    idxs = torch.arange(n, device="cuda") % 5000
    assert batched_nms(boxes, scores, idxs, 0.5).numel() > 0


# ---- scripts/gpu_check.sh and its sweep ----------------------------------------------------------

def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", os.path.join(ROOT, "scripts", "gpu_check.sh")], check=True, timeout=60)


def test_sweep_ops_runs_on_cpu(capsys):
    """The sanitizer driver of gpu_check.sh, on the CPU (CPU vs CPU): every op and kernel variant
    is swept, none mismatches. On a GPU the same sweep compares CUDA with the CPU."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_ops", os.path.join(ROOT, "scripts", "sweep_ops.py"))
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    assert sweep.main(["--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    kernels = {line.split()[1] for line in lines}
    assert kernels == {"roi_align_forward", "roi_align_backward", "roi_align_backward_deterministic", "nms",
                       "batched_nms", "decode_boxes", "paste_masks", "paste_masks_aligned",
                       "paste_masks_aligned_crops"}
    assert all(line.endswith(" 0 mismatches") for line in lines)
