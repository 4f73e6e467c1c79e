"""Convert torchvision weights into a segdet checkpoint.

    python scripts/convert_weights.py --from torchvision SRC.pth DST.pth
    python scripts/convert_weights.py --from torchvision-imagenet SRC.pth DST.pth --arch resnet50
"""
import argparse
import sys

from segdet.modeling.convert import convert_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, choices=["torchvision", "torchvision-imagenet"])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--arch", default=None, help="torchvision builder name for torchvision-imagenet, e.g. resnet50")
    args = parser.parse_args(argv)
    try:
        ckpt = convert_checkpoint(args.source, args.src, args.dst, arch=args.arch)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}: {len(ckpt['model'])} tensors, model_config={ckpt.get('model_config')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
