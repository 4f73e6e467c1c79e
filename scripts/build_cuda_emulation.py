"""Build the emulated CUDA ops: build/emu/libsegdet_emu.so (torch library ``segdet_emu``), and the
emulator's self-test build/emu/test_cuda_emu.

The CUDA glue and kernels (csrc/ops/cuda/*.cu) are compiled as C++ by g++ (``-x c++
-DSEGDET_EMULATION``), so their kernels run in the CPU emulator of csrc/emu/, together with
csrc/emu/register_emu.cpp, which registers the glue functions as ``torch.ops.segdet_emu.*``.
By default with AddressSanitizer and UndefinedBehaviorSanitizer: load the library in a process
started with ``LD_PRELOAD=$(g++ -print-file-name=libasan.so)`` (scripts/run_cuda_emulation.sh
does). A ninja file makes rebuilds incremental.

    .venv/bin/python scripts/build_cuda_emulation.py [--no-sanitize] [--build-dir build/emu] [-j N]
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]


def torch_flags() -> tuple[list[str], list[str]]:
    import torch
    from torch.utils import cpp_extension

    includes = [f"-isystem{p}" for p in cpp_extension.include_paths()]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    cflags = includes + [f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
    ldflags = [f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}", "-lc10", "-ltorch_cpu", "-ltorch"]
    return cflags, ldflags


# The checkout whose csrc/ops is emulated (normally this one; another worktree's for trying its kernels).
OPS_ROOT = Path(os.environ.get("SEGDET_EMU_OPS_ROOT", ROOT)).resolve()


def sources() -> list[Path]:
    cuda = sorted((OPS_ROOT / "csrc/ops/cuda").glob("*.cu"))
    if not cuda:
        raise SystemExit("build_cuda_emulation: no csrc/ops/cuda/*.cu sources found")
    return cuda + [ROOT / "csrc/emu/register_emu.cpp"]


def write_ninja(build_dir: Path, sanitize: bool) -> Path:
    cflags, ldflags = torch_flags()
    opt = ["-O1", "-g"] + (SANITIZE if sanitize else [])
    # -ffp-contract=off: the kernels' float math must round each step as the CPU build does.
    common = ["-std=c++20", "-fPIC", "-fvisibility=hidden", "-ffp-contract=off", "-DSEGDET_EMULATION",
              f"-I{OPS_ROOT / 'csrc'}", f"-I{ROOT / 'csrc'}"] + opt + cflags
    q = lambda args: " ".join(shlex.quote(a) for a in args)  # noqa: E731
    lines = [
        "ninja_required_version = 1.3",
        f"cflags = {q(common)}",
        f"ldflags = {q(opt + ldflags)}",
        "rule cxx",
        "  command = g++ -MMD -MF $out.d $cflags -x c++ -c $in -o $out",
        "  depfile = $out.d",
        "  deps = gcc",
        "  description = g++ $in",
        "rule link",
        "  command = g++ -shared $in -o $out $ldflags",
        "  description = link $out",
    ]
    objects = []
    for src in sources():
        obj = build_dir / "obj" / (src.parent.name + "_" + src.name + ".o")
        objects.append(obj)
        lines.append(f"build {obj}: cxx {src}")
    lines.append(f"build {build_dir / 'libsegdet_emu.so'}: link {' '.join(str(o) for o in objects)}")
    # The emulator's own self-test (csrc/emu/tests): no torch; always sanitized, it checks the reports.
    selftest = ["-std=c++20", "-O1", "-g", f"-I{ROOT / 'csrc'}", "-DSEGDET_EMU_EXPECT_UBSAN"] + SANITIZE
    lines += [
        "rule selftest",
        f"  command = g++ -MMD -MF $out.d {q(selftest)} $in -o $out",
        "  depfile = $out.d",
        "  deps = gcc",
        "  description = g++ $in",
        f"build {build_dir / 'test_cuda_emu'}: selftest {ROOT / 'csrc/emu/tests/test_cuda_emu.cpp'}",
    ]
    path = build_dir / "build.ninja"
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build/emu")
    parser.add_argument("--no-sanitize", action="store_true", help="build without ASan/UBSan (faster, for debugging)")
    parser.add_argument("-j", "--jobs", type=int, default=int(os.environ.get("MAX_JOBS", "2")))
    args = parser.parse_args(argv)
    build_dir = args.build_dir.resolve()
    (build_dir / "obj").mkdir(parents=True, exist_ok=True)
    ninja = shutil.which("ninja") or str(Path(sys.executable).parent / "ninja")
    write_ninja(build_dir, sanitize=not args.no_sanitize)
    subprocess.run([ninja, "-C", str(build_dir), "-j", str(args.jobs)], check=True)
    print(build_dir / "libsegdet_emu.so")
    return 0


if __name__ == "__main__":
    sys.exit(main())
