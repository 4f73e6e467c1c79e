"""Check that a compiled segdet op library registers every op (and, with --cuda, a CUDA kernel for each).

Usage: python scripts/check_registration.py [--cuda] LIBRARY.so

Loading the library needs no GPU: the dispatcher records kernels at load time.
"""
import argparse
import sys

import torch

REQUIRED = ["roi_align", "_roi_align_backward", "nms", "batched_nms", "decode_boxes", "paste_masks", "paste_masks_crops",
            "paste_masks_aligned", "paste_masks_aligned_crops",
            "check_image"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library")
    parser.add_argument("--cuda", action="store_true", help="require a CUDA kernel for every op")
    args = parser.parse_args(argv)

    torch.ops.load_library(args.library)
    names = sorted(
        n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("segdet::")
    )
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        print(f"ops not defined in {args.library}: {missing}")
        return 1
    failed = []
    for name in names:
        kernels = {key: torch._C._dispatch_has_kernel_for_dispatch_key(f"segdet::{name}", key) for key in ("CPU", "CUDA")}
        print(f"segdet::{name:<28} " + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in kernels.items()))
        if not kernels["CPU"] or (args.cuda and not kernels["CUDA"]):
            failed.append(name)
    if failed:
        print(f"missing {'CPU/CUDA' if args.cuda else 'CPU'} kernels for: {failed}")
        return 1
    print(f"all {len(names)} segdet ops registered" + (" with CUDA kernels" if args.cuda else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
