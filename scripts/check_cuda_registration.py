"""Check that a segdet._C library built with FORCE_CUDA=1 registers a CUDA kernel for every op.

Usage: python scripts/check_cuda_registration.py build/cuda-lib/segdet/_C....so

Loading the library needs no GPU: the dispatcher records kernels at load time.
"""
import sys

import torch

REQUIRED = ["roi_align", "_roi_align_backward", "nms", "batched_nms", "decode_boxes"]


def main(path: str) -> int:
    torch.ops.load_library(path)
    names = sorted(
        n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("segdet::")
    )
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        print(f"ops not defined in {path}: {missing}")
        return 1
    failed = []
    for name in names:
        has_cpu = torch._C._dispatch_has_kernel_for_dispatch_key(f"segdet::{name}", "CPU")
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(f"segdet::{name}", "CUDA")
        print(f"segdet::{name:<28} CPU={'yes' if has_cpu else 'NO '} CUDA={'yes' if has_cuda else 'NO'}")
        if not has_cuda:
            failed.append(name)
    if failed:
        print(f"no CUDA kernel registered for: {failed}")
        return 1
    print(f"all {len(names)} segdet ops have CUDA kernels")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
