"""Build script for segdet and its compiled extension ``segdet._C``.

Environment variables:
  FORCE_CUDA=1            build the CUDA kernels even when no GPU is visible (needs nvcc).
  FORCE_CUDA=0            never build the CUDA kernels.
  TORCH_CUDA_ARCH_LIST    GPU architectures to compile for; defaults to the visible GPUs, or
                          DEFAULT_CUDA_ARCH_LIST below when none is visible.
  CUDA_HOME               CUDA toolkit root; found from nvcc when unset.
  MAX_JOBS                parallel compile jobs (ninja).
  SEGDET_DEBUG=1          -O0 -g build with assertions.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0+PTX"


def _toolkit_from_nvcc():
    """CUDA toolkit root as nvcc itself reports it.

    The nvcc on PATH may be a wrapper script outside the toolkit, so the path of the
    executable says nothing; nvcc's dry run prints the TOP variable it resolved.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        m = re.match(r"#\$ TOP=(.+)$", line.strip())
        if m:
            top = os.path.realpath(m.group(1).strip())
            if os.path.exists(os.path.join(top, "bin", "nvcc")):
                return top
    real = os.path.realpath(nvcc)
    candidate = os.path.dirname(os.path.dirname(real))
    if os.path.exists(os.path.join(candidate, "include", "cuda.h")):
        return candidate
    return None


def find_cuda_home():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        path = os.environ.get(var)
        if path and os.path.exists(os.path.join(path, "bin", "nvcc")):
            return path
    path = _toolkit_from_nvcc()
    if path:
        return path
    for path in ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True) + ["/opt/cuda"]:
        if os.path.exists(os.path.join(path, "bin", "nvcc")):
            return path
    return None


def nvidia_wheel_include_dirs():
    """Include dirs of the nvidia-* wheels torch depends on (cuBLAS, cuSPARSE, ... headers)."""
    dirs = []
    try:
        import nvidia  # namespace package shipped by the nvidia-* wheels
    except ImportError:
        return dirs
    for base in list(getattr(nvidia, "__path__", [])):
        for inc in sorted(glob.glob(os.path.join(base, "**", "include"), recursive=True)):
            if glob.glob(os.path.join(inc, "*.h")) and inc not in dirs:
                dirs.append(inc)
    return dirs


def want_cuda(torch):
    force = os.environ.get("FORCE_CUDA")
    if force == "0":
        return False
    if force == "1":
        return True
    return torch.cuda.is_available()


def get_extensions():
    cuda_home = find_cuda_home()
    if cuda_home and not os.environ.get("CUDA_HOME"):
        # torch.utils.cpp_extension reads CUDA_HOME once, at import.
        os.environ["CUDA_HOME"] = cuda_home
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    debug = os.environ.get("SEGDET_DEBUG", "0") == "1"
    with_cuda = want_cuda(torch)
    if with_cuda and cuda_home is None:
        sys.exit("segdet: FORCE_CUDA=1 but no CUDA toolkit was found; set CUDA_HOME to the toolkit root.")
    if with_cuda and torch.version.cuda is None:
        sys.exit("segdet: CUDA kernels requested but the installed torch is a CPU-only build.")

    # csrc/tests (host unit tests, PTX probes) and csrc/emu (the emulated build's own sources) are
    # not part of segdet._C.
    excluded = tuple(os.path.join("csrc", d) + os.sep for d in ("tests", "emu"))
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    sources = [s for s in sources if not s.startswith(excluded)]
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    cuda_sources = [s for s in cuda_sources if not s.startswith(excluded)]

    opt = ["-O0", "-g"] if debug else ["-O3"]
    # No floating-point contraction, on either side: the CPU and CUDA kernels share their math
    # (csrc/ops/*_math.h) and must round every step alike, so float32 results are bit-identical
    # across devices (and match torchvision's per-op rounding). The kernels also spell the
    # rounding out (rounding_math.h); these flags keep any expression they missed honest too.
    # GCC contracts a * b + c into an FMA under -ffp-contract=fast (its GNU-mode default) on any
    # FMA-capable target (e.g. a target("avx2,fma") clone); nvcc does so unless -fmad=false.
    cxx = opt + ["-fopenmp", "-std=c++20", "-fvisibility=hidden", "-ffp-contract=off"]
    if not debug:
        cxx.append("-DNDEBUG")
    extra = {"cxx": cxx}
    define_macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    ext_cls = CppExtension
    if with_cuda:
        ext_cls = CUDAExtension
        sources += cuda_sources
        define_macros.append(("WITH_CUDA", None))
        include_dirs += nvidia_wheel_include_dirs()
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST
        extra["nvcc"] = opt + ["-std=c++20", "--expt-relaxed-constexpr", "-lineinfo", "-fmad=false"] + (
            [] if debug else ["-DNDEBUG"]
        )
    return [
        ext_cls(
            "segdet._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
        )
    ]


BASE_VERSION = "0.1.0"
BUILD_INFO = os.path.join(ROOT, "segdet", "_build_info.py")


def build_version(torch_version: str, cuda_version: str | None) -> tuple[str, str]:
    """(segdet version with the torch/CUDA build as its local tag, the torch requirement).

    "2.14.1+cu130" with CUDA kernels built for 13.0 -> ("0.1.0+pt2.14.1cu130", "torch==2.14.1");
    CPU kernels only -> "0.1.0+pt2.14.1cpu". The requirement names the release without its local tag: pip
    then accepts torch's CPU and CUDA builds of that release, and segdet checks the release at import.
    """
    release = torch_version.split("+")[0]
    build = "cu" + cuda_version.replace(".", "") if cuda_version else "cpu"
    return f"{BASE_VERSION}+pt{release}{build}", f"torch=={release}"


def write_build_info(torch_version: str, version: str, with_cuda: bool) -> None:
    """segdet/_build_info.py: what the extension was compiled against, read by segdet._extension at import."""
    text = (
        '"""Written by setup.py at build time: the torch the compiled extension was built against."""\n'
        f"TORCH_VERSION = {torch_version!r}\nVERSION = {version!r}\nWITH_CUDA = {with_cuda!r}\n"
    )
    old = open(BUILD_INFO).read() if os.path.exists(BUILD_INFO) else None
    if old != text:  # unchanged content keeps the file's mtime, so incremental builds stay incremental
        with open(BUILD_INFO, "w") as f:
            f.write(text)


def main():
    # get_extensions() sets CUDA_HOME, which torch.utils.cpp_extension reads once, at import.
    ext_modules = get_extensions()
    import torch
    from torch.utils.cpp_extension import BuildExtension

    with_cuda = any("WITH_CUDA" in dict(e.define_macros) for e in ext_modules)
    version, torch_requirement = build_version(torch.__version__, torch.version.cuda if with_cuda else None)
    write_build_info(torch.__version__, version, with_cuda)
    setup(
        name="segdet",
        version=version,
        install_requires=[torch_requirement, "numpy", "pycocotools", "hydra-core>=1.3", "Pillow", "tqdm",
                          "tensorboard"],
        description="Mask R-CNN instance segmentation with C++/CUDA kernels for PyTorch",
        packages=find_packages(include=["segdet", "segdet.*"]),
        python_requires=">=3.10",
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        zip_safe=False,
    )


if __name__ == "__main__":
    main()
