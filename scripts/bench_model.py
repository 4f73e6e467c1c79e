"""Whole-model speed: segdet's Mask R-CNN against torchvision's maskrcnn_resnet50_fpn, same weights.

    .venv/bin/python scripts/bench_model.py                      # 800x1216, inference + training
    .venv/bin/python scripts/bench_model.py --quick --json out.json   # small smoke run
    .venv/bin/python scripts/bench_model.py --mode train --reps 3 --device cuda
    .venv/bin/python scripts/bench_model.py --amp bf16              # adds segdet under bf16 autocast
    .venv/bin/python scripts/bench_model.py --amp bf16 --nchw       # + segdet with an NCHW backbone, both dtypes
    .venv/bin/python scripts/bench_model.py --mode inference --aoti   # + segdet's AOTInductor package
    .venv/bin/python scripts/bench_model.py --mode inference --aoti --amp bf16   # + bf16 eager and bf16 package

torchvision's model is built exactly as maskrcnn_resnet50_fpn builds it with pretrained weights
(FrozenBatchNorm, trainable_backbone_layers=3), given random weights perturbed so that it detects
things (segdet.utils.benchmark.make_maskrcnn_weights_detect), and converted to segdet's
maskrcnn_r50_fpn_torchvision config with segdet.modeling.convert: both compute the same function.

Inference: one synthetic shapes image (eval mode, torch.no_grad). Training: one SGD step
(forward, backward, step) on a batch of two images with the same targets for both models.
Images are not resized (min_size/max_size are set from --size). The two models are timed
interleaved (segdet, torchvision, segdet, ...) after warm-up, so load on a shared machine hits
both alike; reported are medians, quartiles, min/max and speedup = torchvision / segdet median.

--amp bf16 (or fp16) adds a third candidate, "segdet-<amp>": the same segdet model run under
torch.autocast with that dtype (channels_last as the config sets it). torchvision stays in float32:
it is the reference the speed goals are stated against.
"""
import argparse
import copy
import json
import os
import platform
import sys
import time

import torch

from segdet.modeling import build_model
from segdet.modeling.convert import convert_torchvision_maskrcnn, torchvision_model_config
from segdet.utils.amp import AMP_DTYPES, cpu_has_bf16
from segdet.utils.benchmark import (
    compare_models,
    format_table,
    inference_call,
    make_maskrcnn_weights_detect,
    synthetic_scene,
    training_step_call,
)

NUM_CLASSES = 90  # torchvision COCO: 91 score columns with background


def build_models(height: int, width: int, seed: int, *, proposals=None, rois_per_image=None, detections=None):
    """(torchvision MaskRCNN, segdet MaskRCNN) with identical weights, both sized not to resize.

    proposals (post-NMS RPN proposals per image, train and test), rois_per_image (RoIs sampled
    per image for the box losses) and detections (per image) override torchvision's defaults
    (2000/1000, 512, 100) in both models alike; None keeps them.
    """
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    min_size, max_size = min(height, width), max(1333, height, width)
    torch.manual_seed(seed)
    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    overrides = {}
    if proposals is not None:
        overrides.update(rpn_pre_nms_top_n_train=proposals, rpn_pre_nms_top_n_test=proposals,
                         rpn_post_nms_top_n_train=proposals, rpn_post_nms_top_n_test=proposals)
    if rois_per_image is not None:
        overrides["box_batch_size_per_image"] = rois_per_image
    if detections is not None:
        overrides["box_detections_per_img"] = detections
    tv = TorchvisionMaskRCNN(backbone, num_classes=NUM_CLASSES + 1, min_size=min_size, max_size=max_size, **overrides)
    state = tv.state_dict()
    make_maskrcnn_weights_detect(state, generator=torch.Generator().manual_seed(seed + 1))
    tv.load_state_dict(state)

    cfg = copy.deepcopy(torchvision_model_config())
    cfg.update(min_size=min_size, max_size=max_size)
    if proposals is not None:
        cfg["rpn"]["pre_nms_topk"] = cfg["rpn"]["post_nms_topk"] = [proposals, proposals]
    if rois_per_image is not None:
        cfg["roi_heads"]["sampler"]["batch_size_per_image"] = rois_per_image
    if detections is not None:
        cfg["roi_heads"]["detections_per_image"] = detections
    ours = build_model(cfg)
    ours.load_state_dict(convert_torchvision_maskrcnn(tv.state_dict()), strict=True)
    return tv, ours


def contiguous_copy(model):
    """A copy of segdet's model whose backbone runs in the contiguous (NCHW) memory format instead of channels_last
    (the heads follow the backbone's layout: roi_align keeps its input's format)."""
    other = copy.deepcopy(model)
    other.backbone.channels_last = False
    other.backbone.to(memory_format=torch.contiguous_format)
    return other


def make_batch(height: int, width: int, num_images: int, seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(num_images):
        image, target = synthetic_scene(height, width, generator=g, num_classes=NUM_CLASSES)
        # Float in [0, 1]: torchvision's transform rejects uint8; segdet takes either.
        images.append(image.to(device, torch.float32) / 255.0)
        targets.append({k: v.to(device) for k, v in target.items()})
    return images, targets


def profile(fn, label: str, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        fn()
    print(f"\n== profile: {label} ==")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def machine_info(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = os.getloadavg()[0]
    return info


def aoti_call(model, image: torch.Tensor, device: str, amp: str = "none"):
    """(no-argument function running model's AOTInductor package on ``image``, {"export_s", "compile_s"});
    ``amp`` is the package's precision (scripts/export.py amp=none|bf16).

    The package takes uint8 images: ``image`` (float in [0, 1]) is quantised once, before timing; the eager
    models keep the float image (the difference is one division in the preprocessing)."""
    import tempfile

    from segdet.export import compile_package, export_model, package_metadata

    h, w = image.shape[-2:]
    side = max(h, w)
    t0 = time.perf_counter()
    ep = export_model(model, min_side=32, max_side=side, amp=amp)
    t1 = time.perf_counter()
    path = os.path.join(tempfile.mkdtemp(prefix="segdet-bench-"), "model.pt2")
    meta = package_metadata(num_classes=model.num_classes, class_names=[str(i) for i in range(model.num_classes)],
                            label_to_category_id=None, min_side=32, max_side=side, amp=amp)
    compile_package(ep, path, meta, amp=amp)
    t2 = time.perf_counter()
    package = torch._inductor.aoti_load_package(path)
    u8 = (image * 255).round().clamp(0, 255).to(torch.uint8)

    def run():
        with torch.no_grad():
            return package(u8)

    return run, {"export_s": t1 - t0, "compile_s": t2 - t1}


def run(args) -> dict:
    height, width = args.size
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "machine": machine_info(device),
        "config": {"size": [height, width], "device": device, "warmup": args.warmup, "reps": args.reps,
                   "train_batch": args.batch, "seed": args.seed, "proposals": args.proposals,
                   "rois_per_image": args.rois_per_image, "max_detections": args.max_detections,
                   "amp": args.amp},
    }
    tv, ours = build_models(height, width, args.seed, proposals=args.proposals, rois_per_image=args.rois_per_image,
                            detections=args.max_detections)
    tv, ours = tv.to(device), ours.to(device)
    amp = AMP_DTYPES[args.amp]
    if amp is torch.bfloat16 and device == "cpu" and not cpu_has_bf16():
        print("warning: --amp bf16 on a CPU without native bf16 (avx512_bf16/amx_bf16): expect it slower than float32")
    candidates = {}
    columns = [("model", "model"), ("median_ms", "median ms"), ("q1_ms", "q1"), ("q3_ms", "q3"),
               ("min_ms", "min"), ("max_ms", "max"), ("reps", "reps")]

    if args.mode in ("both", "inference"):
        images, _ = make_batch(height, width, 1, args.seed + 10, device)
        candidates = {"segdet": inference_call(ours, images), "torchvision": inference_call(tv, images)}
        if amp is not None:
            candidates[f"segdet-{args.amp}"] = inference_call(ours, images, amp=amp)
        if args.nchw:
            nchw = contiguous_copy(ours)
            candidates["segdet-nchw"] = inference_call(nchw, images)
            if amp is not None:
                candidates[f"segdet-nchw-{args.amp}"] = inference_call(nchw, images, amp=amp)
        if args.aoti:
            # The float32 package, and with --amp bf16 also the bf16 one (export amp=bf16).
            for amp_name in ["none"] + (["bf16"] if args.amp == "bf16" else []):
                name = "segdet_aoti" if amp_name == "none" else f"segdet_aoti-{amp_name}"
                key = name.replace("segdet_", "")  # "aoti", "aoti-bf16": export and compile seconds
                candidates[name], result[key] = aoti_call(ours, images[0], device, amp=amp_name)
                print(f"{name}: export {result[key]['export_s']:.1f} s, "
                      f"AOTInductor compile {result[key]['compile_s']:.1f} s")
        detections = {name: int(len(fn()[0]["boxes"] if not name.startswith("segdet_aoti") else fn()[0]))
                      for name, fn in candidates.items()}
        if args.profile:
            for name, fn in candidates.items():
                profile(fn, f"{name} inference", args.profile)
        stats = compare_models(candidates, baseline="torchvision", device=device, warmup=args.warmup, reps=args.reps)
        result["inference"] = {**stats, "detections": detections}
        print(f"\ninference, 1 image {height}x{width}, {device}: detections {detections}")
        print(format_table([{"model": n, **stats[n]} for n in candidates], columns))
        for name, ratio in stats["speedup"].items():
            print(f"speedup (torchvision / {name} median): x{ratio:.2f}")

    if args.mode in ("both", "train"):
        images, targets = make_batch(height, width, args.batch, args.seed + 20, device)
        # Copies, so that training steps leave the inference models' weights alone.
        tv_train, ours_train = copy.deepcopy(tv), copy.deepcopy(ours)
        candidates = {
            "segdet": training_step_call(ours_train, images, targets),
            "torchvision": training_step_call(tv_train, images, targets),
        }
        if amp is not None:
            candidates[f"segdet-{args.amp}"] = training_step_call(copy.deepcopy(ours), images, targets, amp=amp)
        if args.nchw:
            candidates["segdet-nchw"] = training_step_call(contiguous_copy(ours), images, targets)
            if amp is not None:
                candidates[f"segdet-nchw-{args.amp}"] = training_step_call(contiguous_copy(ours), images, targets,
                                                                          amp=amp)
        if args.profile:
            for name, fn in candidates.items():
                profile(fn, f"{name} training step", args.profile)
        stats = compare_models(candidates, baseline="torchvision", device=device, warmup=args.warmup, reps=args.reps)
        result["train"] = {**stats, "objects": [int(len(t["boxes"])) for t in targets]}
        print(f"\ntraining step, batch {args.batch} x {height}x{width}, {device}")
        print(format_table([{"model": n, **stats[n]} for n in candidates], columns))
        for name, ratio in stats["speedup"].items():
            print(f"speedup (torchvision / {name} median): x{ratio:.2f}")

    if hasattr(os, "getloadavg"):
        result["machine"]["loadavg_end"] = os.getloadavg()[0]
    return result


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be HEIGHTxWIDTH, e.g. 800x1216, got {text!r}") from None
    if height < 32 or width < 32:
        raise argparse.ArgumentTypeError(f"--size must be at least 32x32, got {text!r}")
    return height, width


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["both", "inference", "train"], default="both")
    parser.add_argument("--size", type=parse_size, default=None, help="image HEIGHTxWIDTH (default 800x1216)")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds per model (default 5, --quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per model first (default 1)")
    parser.add_argument("--batch", type=int, default=2, help="training batch size")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's default)")
    parser.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none",
                        help="also time segdet under torch.autocast with this dtype (torchvision stays float32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also print a torch.profiler table (top ROWS ops) per model and mode")
    parser.add_argument("--proposals", type=int, default=None, help="RPN proposals per image (default 2000/1000)")
    parser.add_argument("--rois-per-image", type=int, default=None, help="sampled RoIs per image (default 512)")
    parser.add_argument("--max-detections", type=int, default=None, help="detections per image (default 100)")
    parser.add_argument("--aoti", action="store_true",
                        help="also time segdet's AOTInductor package (export + compile first: minutes); with "
                             "--amp bf16 also a bf16 package")
    parser.add_argument("--nchw", action="store_true",
                        help="also time segdet with its backbone in the contiguous (NCHW) format instead of the "
                             "config's channels_last (with --amp, in both precisions)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 128x192 images, 1 rep, no warm-up, 100 proposals, 64 RoIs, 10 detections")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON to PATH")
    args = parser.parse_args(argv)
    args.size = args.size or ((128, 192) if args.quick else (800, 1216))
    args.reps = args.reps if args.reps is not None else (1 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    if args.quick:
        args.proposals = args.proposals or 100
        args.rois_per_image = args.rois_per_image or 64
        args.max_detections = args.max_detections or 10
    if args.reps < 1 or args.warmup < 0 or args.batch < 1:
        parser.error("--reps and --batch must be >= 1 and --warmup >= 0")

    start = time.perf_counter()
    result = run(args)
    result["wall_s"] = time.perf_counter() - start
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
