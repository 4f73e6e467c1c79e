"""Inference on image files: load a trained model, predict, write COCO-format results and overlay pictures.

``scripts/predict.py`` is a thin Hydra front end over ``predict``; everything here takes plain values.

Nothing computed is lost: every finished image is appended, as one JSON line, to ``OUTPUT/predictions.jsonl``
before the next batch starts, and ``OUTPUT/predictions.json`` is assembled from those lines at the end. A run
stopped by Ctrl-C, SIGTERM or SIGKILL and started again with the same settings skips the images the journal
already holds, so each image ends up in predictions.json exactly once.
"""
from __future__ import annotations

import glob as globlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segdet.evaluation.coco_results import (
    deferred_mask_pasting,
    encode_mask_results,
    iter_mask_crops,
    to_coco_results,
)
from segdet.utils.amp import autocast, check_amp, resolve_amp
from segdet.utils.signals import StopRequest

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_CATEGORIES",
    "IMAGE_EXTENSIONS",
    "JOURNAL_NAME",
    "LIST_EXTENSIONS",
    "PredictionInterrupted",
    "assign_image_ids",
    "default_batch_size",
    "default_class_names",
    "encode_mask_rle",
    "list_images",
    "load_model",
    "predict",
    "predict_files",
    "read_image",
    "resolve_class_names",
    "to_coco_results",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
# A file ``input=`` names with one of these extensions lists image paths instead of being one.
LIST_EXTENSIONS = (".txt", ".lst", ".list")
# The append-only record of finished images, beside predictions.json.
JOURNAL_NAME = "predictions.jsonl"
JOURNAL_FORMAT = "segdet.predict/1"
PROGRESS_MODES = ("auto", "bar", "plain", "none")

# COCO 2017 "things": (category id, name). The ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71, 83.
COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"),
    (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)


def default_class_names(num_classes: int) -> list[str]:
    """K names for labels 1..K when neither the checkpoint nor the config gives any.

    80 classes: COCO's contiguous order; 90: torchvision's COCO models, whose label is the COCO category
    id (unused ids read "N/A"); otherwise "class_1".."class_K".
    """
    if num_classes == len(COCO_CATEGORIES):
        return [name for _, name in COCO_CATEGORIES]
    if num_classes == 90:
        by_id = dict(COCO_CATEGORIES)
        return [by_id.get(i, "N/A") for i in range(1, 91)]
    return [f"class_{i}" for i in range(1, num_classes + 1)]


def _image_files(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_list_file(path: Path) -> list[Path]:
    base = path.parent
    files, seen = [], set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line) if Path(line).is_absolute() else base / line
        if p in seen:
            logger.warning("%s lists %s more than once; it is predicted once", path, p)
            continue
        seen.add(p)
        files.append(p)
    if not files:
        raise FileNotFoundError(f"input list {str(path)!r} names no files (one path a line; # starts a comment)")
    return files


def list_images(input_path: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The image files ``input=`` names.

    - an image file: itself;
    - a directory: its files with an image extension (``IMAGE_EXTENSIONS``, any case), sorted; ``recursive``
      descends into subdirectories (sorted by path);
    - a text file (``LIST_EXTENSIONS``): the paths it lists, one a line, in that order (blank lines and lines
      starting with # ignored; relative paths are relative to the list file's directory);
    - a glob pattern (``photos/*.jpg``; ``**`` matches any depth): the matching image files, sorted.

    Files are not opened here: one that cannot be read is reported (and skipped) when predicting.
    """
    text = os.fspath(input_path)
    path = Path(text)
    if path.is_dir():
        files = _image_files(path.rglob("*") if recursive else path.iterdir())
        if not files:
            hint = "" if recursive else "; recursive=true also looks in subdirectories"
            raise FileNotFoundError(f"input directory {text!r} contains no images ({', '.join(IMAGE_EXTENSIONS)}){hint}")
        return files
    if path.is_file():
        return _read_list_file(path) if path.suffix.lower() in LIST_EXTENSIONS else [path]
    if globlib.has_magic(text):
        files = _image_files(Path(p) for p in globlib.glob(text, recursive=True))
        if not files:
            raise FileNotFoundError(f"input pattern {text!r} matches no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return files
    raise FileNotFoundError(f"input {text!r} does not exist (expected an image file, a directory of images, a glob "
                            "pattern or a text file listing image paths)")


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """RGB uint8 Tensor[3, H, W] of the image file ``path`` (any Pillow format; greyscale/alpha converted).
    Raises ValueError naming the file when it cannot be read or converted to RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {str(path)!r}: {exc}") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"cannot read image {str(path)!r}: RGB conversion gave {rgb.dtype} {list(rgb.shape)}")
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def assign_image_ids(paths: Sequence[Path]) -> list[int]:
    """COCO image ids: the file stem when it is a non-negative integer ("000139.jpg" -> 139); other files
    count on from the largest such id, in order, so no two images share an id."""
    ids: list[int | None] = [int(p.stem) if p.stem.isdigit() else None for p in paths]
    numeric = [i for i in ids if i is not None]
    if len(set(numeric)) != len(numeric):
        raise ValueError("two input files have the same numeric stem (image id): "
                         + ", ".join(str(p) for p, i in zip(paths, ids) if i is not None and numeric.count(i) > 1))
    next_id = max(numeric, default=-1) + 1
    out = []
    for i in ids:
        if i is None:
            i, next_id = next_id, next_id + 1
        out.append(i)
    return out


def encode_mask_rle(mask: torch.Tensor) -> dict:
    """COCO RLE {"size": [H, W], "counts": str} of a bool Tensor[H, W]."""
    return encode_mask_results(mask[None])[0]


def default_batch_size(device: str | torch.device) -> int:
    """Images per forward pass when ``batch_size`` is not given: 2 on the CPU (larger batches only pad more),
    on a GPU 2 per 8 GiB of memory, from 2 to 16."""
    device = torch.device(device)
    if device.type != "cuda":
        return 2
    total = torch.cuda.get_device_properties(device.index or 0).total_memory
    return int(min(16, max(2, 2 * (total // (8 << 30)))))


def load_model(cfg_model, checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build the model and load ``checkpoint`` into it, in eval mode on ``device``.

    ``checkpoint``: a checkpoint file, or a run directory (its newest checkpoint), as ``scripts/eval.py`` takes
    it. The model is built from ``cfg_model`` when it names one (has ``_target_``), else from the config stored in
    the checkpoint. With an explicit ``cfg_model`` the checkpoint's stored ``num_classes`` still wins, so a model
    trained on another dataset loads with the class count it was trained with; weights that do not fit fail with
    a CheckpointError naming the config differences. Returns (model, checkpoint dict without "model", plus
    "checkpoint_path": the file read and "model_config": the plain-dict config built).
    """
    from segdet.engine.checkpoint import (
        config_differences,
        load_model_state,
        model_config_to_build,
        read_checkpoint,
        resolve_checkpoint,
    )
    from segdet.modeling import build_model

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available; use device=cpu")
    path = resolve_checkpoint(checkpoint)
    ckpt = read_checkpoint(path)
    saved = ckpt.get("model_config")
    saved_classes = saved.get("num_classes") if isinstance(saved, Mapping) else None
    config, explicit = model_config_to_build(ckpt, cfg_model, path, num_classes=saved_classes)
    diffs = config_differences(saved, config) if explicit else []
    model = build_model(config)
    load_model_state(model, ckpt["model"], source=f"checkpoint {path}", config_diffs=diffs)
    if diffs:
        logger.warning("model= differs from the config checkpoint %s was saved with: %s", path, "; ".join(diffs))
    model.to(device).eval()
    info = {k: v for k, v in ckpt.items() if k != "model"}
    info.update(checkpoint_path=str(path), model_config=config)
    return model, info


class PredictionInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped prediction after a batch; what was done is saved. ``exit_code`` = 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes ``paths[indices[k]]`` (in a DataLoader worker): (index, uint8 Tensor[3, H, W] or None, error)."""

    def __init__(self, paths: Sequence[Path], indices: Sequence[int]):
        self.paths = list(paths)
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        try:
            return i, read_image(self.paths[i]), None
        except ValueError as exc:
            return i, None, str(exc)


def _as_list(batch):
    return batch


def _ignore_stop_signals(worker_id: int) -> None:
    # A terminal's Ctrl-C or a scheduler's SIGTERM reaches the whole process group. torch's workers would die of
    # it mid-batch and fail the main process; they leave the decision to the main process, which stops after its
    # current batch and shuts them down (and they still exit when it is killed outright).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _journal_key(path: Path) -> str:
    # Absolute, so the same command resumes the same images whatever the listing order of earlier runs was.
    return os.path.abspath(path)


def _read_journal(path: Path, settings: Mapping) -> dict[str, dict]:
    """{file key: record} of the images an earlier run finished, after checking it ran with ``settings``. A torn
    last line (the process killed while writing it) is cut off, so appending goes on from a whole line."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    records: dict[str, dict] = {}
    good_end = 0
    header = None
    for line_no, line in enumerate(raw.splitlines(keepends=True), 1):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no line end")
            record = json.loads(line)
        except ValueError:
            if good_end + len(line) == len(raw):  # the last line only
                logger.warning("%s: dropping an incomplete last line (an earlier run was killed while writing it)",
                               path)
                break
            raise ValueError(f"{path} line {line_no} is not a JSON record; delete the file to start over") from None
        if header is None:
            if record.get("format") != JOURNAL_FORMAT:
                raise ValueError(f"{path} is not a segdet predict journal (first line {line[:80]!r}); choose another "
                                 "output= or delete it")
            header = record
        else:
            records.setdefault(record["file"], record)
        good_end += len(line)
    if header is not None:
        before = json.loads(json.dumps(header.get("settings")))
        now = json.loads(json.dumps(dict(settings)))
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            detail = "; ".join(f"{k}: {_short(before.get(k))} there, {_short(now.get(k))} now" for k in changed)
            raise ValueError(f"output directory {path.parent} holds results of a run with other settings ({detail}); "
                             f"rerun with those settings, choose another output=, or delete {path} to start over")
    if good_end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _atomic_write_text(path: Path, text: str) -> None:
    from segdet.engine.checkpoint import atomic_write

    atomic_write(path, lambda f: f.write(text.encode()))


def _overlay_names(paths: Sequence[Path], image_ids: Sequence[int]) -> list[str]:
    used: set[str] = set()
    names = []
    for path, image_id in zip(paths, image_ids):
        name = path.stem if path.stem not in used else f"{path.stem}_{image_id}"
        used.add(name)
        names.append(name)
    return names


def _select(output: Mapping, keep: torch.Tensor) -> dict:
    """The detections ``keep`` (bool [D]) of one output dict; per-image entries (image_size, ...) kept as they are."""
    num = int(keep.shape[0])
    return {k: v[keep] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == num else v
            for k, v in output.items()}


class _Progress:
    """A tqdm bar (with ETA) on a terminal, a plain log line every ``interval`` s otherwise, or nothing."""

    def __init__(self, total: int, initial: int, mode: str, interval: float = 10.0):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode, self.total, self.done, self.interval = mode, total, initial, interval
        self.start_done = initial
        self.start = self.last = time.monotonic()
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="img", desc="predict", dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.mode == "plain" and (now - self.last >= self.interval or self.done == self.total):
            self.last = now
            rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "?"
            logger.info("predict: %d/%d images (%.0f%%), %.2f images/s, ETA %s", self.done, self.total,
                        100.0 * self.done / max(self.total, 1), rate, eta_text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@torch.no_grad()
def predict_files(
    model: nn.Module,
    paths: Sequence[Path],
    output_dir: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    score_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    label_to_category_id: Mapping[int, int] | None = None,
    write_overlays: bool = True,
    batch_size: int | None = None,
    num_workers: int = 0,
    strict: bool = False,
    overlay_grid: bool = False,
    overlay_grid_size: int = 16,
    progress: str = "auto",
    run_settings: Mapping | None = None,
    amp_dtype: torch.dtype | None = None,
) -> list[dict]:
    """Run ``model`` (eval mode, MaskRCNN call convention: the eager model or an exported package's
    ``segdet.export.package.PackageModel``) over the image files and write the outputs.

    Images are decoded in ``num_workers`` DataLoader workers and run ``batch_size`` at a time (default
    ``default_batch_size(device)``). Writes into ``output_dir``:

    - ``predictions.jsonl``: a header line with the run's settings (score_threshold plus ``run_settings``), then
      one line per finished image, appended as it is done: {"file", "image_id", "detections": [COCO results]}
      or {"file", "image_id", "skipped": reason} for a file that cannot be read as RGB. Images already in it
      (from a stopped run with the same settings) are not predicted again;
    - ``predictions.json``: the COCO results (score >= ``score_threshold``) of all finished images, in input
      order, each image once, written atomically at the end (also when stopped by ``strict`` or a signal);
    - ``image_ids.json``: {file name: image_id} (paths when names repeat);
    - with ``write_overlays``, ``<stem>.png`` per image (``draw_instances``: small images upscaled, masks filled
      and outlined), and with ``overlay_grid`` also ``overlay_grid.png``, a contact sheet of the first
      ``overlay_grid_size`` images' overlays.

    An unreadable file, or one the model refuses (a model with ``input_error(image) -> reason or None``, as a
    package does for sizes it was not exported for), is skipped with a warning naming it; ``strict`` stops at the
    first instead (ValueError, after writing what was done). SIGINT/SIGTERM stop after the current batch:
    PredictionInterrupted. The eager model's masks are pasted box by box (``deferred_mask_pasting``), so D x H x W
    masks never exist; a package returns full-image masks, encoded as they come. ``amp_dtype``: run the model under
    torch.autocast with that dtype (boxes and scores still come back float32). Returns the COCO results list.
    """
    from segdet.utils.visualize import draw_instances

    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES}, got {progress!r}")
    if overlay_grid and not write_overlays:
        raise ValueError("overlay_grid=true draws the contact sheet from the overlays: it needs overlays=true")
    device = torch.device(device)
    batch_size = default_batch_size(device) if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(num_workers) < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    paths = [Path(p) for p in paths]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    image_ids = assign_image_ids(paths)
    names = _overlay_names(paths, image_ids)
    keys = [_journal_key(p) for p in paths]
    settings = {"score_threshold": float(score_threshold), **dict(run_settings or {})}
    journal_path = output_dir / JOURNAL_NAME
    done = _read_journal(journal_path, settings)
    todo = [i for i, key in enumerate(keys) if key not in done]
    resumed = len(paths) - len(todo)
    if resumed:
        logger.info("Resuming: %d of %d images are already in %s", resumed, len(paths), journal_path)

    loader = torch.utils.data.DataLoader(_ImageFiles(paths, todo), batch_size=batch_size, shuffle=False,
                                         num_workers=int(num_workers), collate_fn=_as_list,
                                         worker_init_fn=_ignore_stop_signals if int(num_workers) > 0 else None)
    model.eval()
    start = time.monotonic()
    processed = 0
    failure: str | None = None
    bar = _Progress(len(paths), resumed, progress)
    with open(journal_path, "a", encoding="utf-8") as journal, StopRequest(stopping="stopping after the current batch (run the same command again to go on)") as stop, \
            deferred_mask_pasting(model):
        if journal.tell() == 0:
            journal.write(json.dumps({"format": JOURNAL_FORMAT, "settings": settings}) + "\n")
            journal.flush()
        try:
            for batch in loader:
                batch = _refuse_inputs(model, batch, paths)
                good = [(i, img) for i, img, _ in batch if img is not None]
                with autocast(device, amp_dtype):
                    outputs = model([img.to(device) for _, img in good]) if good else []
                records = {}
                for (i, image), out in zip(good, outputs):
                    out = _select(out, out["scores"] >= score_threshold)
                    results = to_coco_results(out, image_ids[i], label_to_category_id)
                    if write_overlays:
                        _save_overlay(draw_instances, output_dir / f"{names[i]}.png", image, out, class_names)
                    records[i] = {"file": keys[i], "image_id": image_ids[i], "detections": results}
                for i, _, error in batch:
                    if error is None:
                        continue
                    if strict:
                        failure = error
                        break
                    logger.warning("skipping %s", error)
                    records[i] = {"file": keys[i], "image_id": image_ids[i], "skipped": error}
                # Whole lines in input order, flushed before the next batch: a kill loses at most this batch.
                for i in sorted(records):
                    journal.write(json.dumps(records[i]) + "\n")
                journal.flush()
                processed += len(records)
                bar.update(len(records))
                if failure is not None or stop.requested:
                    break
        except RuntimeError:
            # A worker killed by the signal before it could ignore it: the stop was asked for, not a failure.
            if not stop.requested:
                raise
        finally:
            bar.close()
    results, skipped, total_done = _write_outputs(output_dir, journal_path, paths, keys, image_ids, names,
                                                  overlay_grid=overlay_grid, grid_size=overlay_grid_size)
    elapsed = time.monotonic() - start
    logger.info("Predicted %d images (%d skipped as unreadable, %d done by an earlier run), %d detections, "
                "%.2f images/s; wrote %s", total_done, skipped, resumed, len(results),
                processed / elapsed if elapsed > 0 else 0.0, output_dir / "predictions.json")
    if failure is not None:
        raise ValueError(f"strict=true: {failure} ({total_done} images done before it are in "
                         f"{output_dir / 'predictions.json'})")
    if stop.requested:
        raise PredictionInterrupted(f"stopped after {total_done} of {len(paths)} images; run the same command again "
                                    "to predict the rest", stop.exit_code)
    return results


def _refuse_inputs(model, batch, paths: Sequence[Path]) -> list:
    """``batch`` ((index, image or None, error) triples) with the images ``model.input_error`` refuses turned into
    errors, so they are skipped (or stop a strict run) like unreadable files."""
    check = getattr(model, "input_error", None)
    if check is None:
        return batch
    out = []
    for i, image, error in batch:
        reason = check(image) if image is not None else None
        if reason is not None:
            image, error = None, f"cannot predict image {str(paths[i])!r}: {reason}"
        out.append((i, image, error))
    return out


def _save_overlay(draw_instances, path: Path, image: torch.Tensor, out: Mapping, class_names) -> None:
    height, width = image.shape[-2:]
    if out.get("mask_probs") is not None:
        masks = list(iter_mask_crops(out["mask_probs"], out["boxes"], int(height), int(width),
                                     float(out.get("mask_threshold", 0.5)), paste=out.get("mask_paste", "torchvision")))
    else:
        masks = out.get("masks")
    picture = draw_instances(image, out["boxes"].cpu(), out["labels"].cpu(), out["scores"].cpu(), masks, class_names)
    # Written under a temporary name first: a killed run leaves no truncated PNG behind.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    picture.save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_outputs(output_dir: Path, journal_path: Path, paths, keys, image_ids, names, *, overlay_grid: bool,
                   grid_size: int) -> tuple[list[dict], int, int]:
    """predictions.json and image_ids.json (and the contact sheet) from the journal: (results, skipped, images)."""
    from PIL import Image

    from segdet.utils.visualize import contact_sheet

    records = {}
    for line in journal_path.read_text(encoding="utf-8").splitlines()[1:]:
        record = json.loads(line)
        records.setdefault(record["file"], record)
    results: list[dict] = []
    skipped = done = 0
    for key in keys:
        record = records.get(key)
        if record is None:
            continue
        done += 1
        if "skipped" in record:
            skipped += 1
        else:
            results.extend(record["detections"])
    _atomic_write_text(output_dir / "predictions.json", json.dumps(results))
    file_names = [p.name for p in paths]
    if len(set(file_names)) != len(file_names):
        file_names = [str(p) for p in paths]
    _atomic_write_text(output_dir / "image_ids.json", json.dumps(dict(zip(file_names, image_ids)), indent=1))
    if overlay_grid:
        pictures, captions = [], []
        for path, name, key in zip(paths, names, keys):
            overlay = output_dir / f"{name}.png"
            if key in records and "skipped" not in records[key] and overlay.is_file():
                with Image.open(overlay) as img:
                    pictures.append(img.convert("RGB"))
                captions.append(path.name)
            if len(pictures) == grid_size:
                break
        if pictures:
            sheet = contact_sheet(pictures, captions)
            tmp = output_dir / f".overlay_grid.png.tmp-{os.getpid()}"
            sheet.save(tmp, format="PNG")
            os.replace(tmp, output_dir / "overlay_grid.png")
    return results, skipped, done


def resolve_class_names(explicit: Sequence[str] | None, checkpoint_info: Mapping, num_classes: int) -> list[str]:
    """Names for labels 1..K: ``explicit`` if given, else the checkpoint's "class_names", else
    ``default_class_names(num_classes)``."""
    for source, names in (("class_names", explicit), ("the checkpoint's class_names", checkpoint_info.get("class_names"))):
        if names is None:
            continue
        names = [str(n) for n in names]
        if len(names) != num_classes:
            raise ValueError(f"{source} has {len(names)} names but the model has num_classes={num_classes}")
        return names
    return default_class_names(num_classes)


def predict(
    *,
    cfg_model,
    checkpoint: str | os.PathLike,
    input: str | os.PathLike,  # noqa: A002 - the CLI key
    output: str | os.PathLike,
    device: str | None = None,
    score_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    recursive: bool = False,
    batch_size: int | None = None,
    num_workers: int | None = None,
    strict: bool = False,
    overlays: bool = True,
    overlay_grid: bool = False,
    overlay_grid_size: int = 16,
    progress: str = "auto",
    amp: str = "none",
) -> list[dict]:
    """Everything ``scripts/predict.py`` does: list the inputs, load the model, predict, write results
    (``predict_files``). ``cfg_model`` None (or without ``_target_``): the model config stored in the checkpoint.

    ``checkpoint`` a ``.pt2`` file: the exported package (``scripts/export.py``) runs instead of the eager model,
    through the same pipeline and outputs; its metadata gives the class names and category ids, it runs on the
    device it was compiled for (``device`` None, or naming that device), and ``cfg_model`` and ``amp`` must be
    left unset (the package fixes the network and its precision: ``scripts/export.py amp=none|bf16``). ``device``
    None with a checkpoint: the CPU.

    category_id in the results is the checkpoint's (package's) ``label_to_category_id[label]`` when it stores
    that mapping, the model label otherwise. ``num_workers`` None: up to 4 decoding workers, half the CPUs.
    """
    if not 0.0 <= float(score_threshold) <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if int(overlay_grid_size) < 1:
        raise ValueError(f"overlay_grid_size must be >= 1, got {overlay_grid_size}")
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES}, got {progress!r}")
    if overlay_grid and not overlays:
        raise ValueError("overlay_grid=true draws the contact sheet from the overlays: it needs overlays=true")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_amp(amp, key="amp")
    paths = list_images(input, recursive=bool(recursive))  # before the (slow) model build: a wrong path fails at once
    from segdet.export import METADATA_PREFIX
    from segdet.export.package import is_package_path, load_package

    if is_package_path(checkpoint):
        if cfg_model:
            raise ValueError(f"model= cannot be combined with checkpoint={os.fspath(checkpoint)!r}: an exported "
                             "package fixes its network; leave model= unset")
        if amp != "none":
            raise ValueError(f"amp={amp} cannot be used with the package checkpoint={os.fspath(checkpoint)!r}: its "
                             "precision was fixed when it was exported and autocast does not reach compiled code; use "
                             "amp=none (export with scripts/export.py ... amp=bf16 for a bf16 package)")
        model, info = load_package(checkpoint, device)
        device = info["device"]
        # What export wrote (source checkpoint, classes, sizes, versions) identifies the package's results.
        model_settings = {k: v for k, v in info["metadata"].items() if k.startswith(METADATA_PREFIX)}
    else:
        device = "cpu" if device is None else device
        model, info = load_model(cfg_model, checkpoint, device)
        model_settings = info["model_config"]
    names = resolve_class_names(class_names, info, int(model.num_classes))
    mapping = info.get("label_to_category_id")
    if mapping is not None:
        mapping = {int(k): int(v) for k, v in mapping.items()}
    if num_workers is None:
        num_workers = min(4, max(1, (os.cpu_count() or 2) // 2))
    # What makes the journal's lines valid for a rerun: the same weights, model and category ids.
    run_settings = {"checkpoint": os.path.abspath(info["checkpoint_path"]), "model": model_settings,
                    "label_to_category_id": {str(k): v for k, v in (mapping or {}).items()}, "amp": amp}
    return predict_files(model, paths, output, device=device, score_threshold=float(score_threshold),
                         class_names=names, label_to_category_id=mapping, write_overlays=bool(overlays),
                         batch_size=batch_size, num_workers=int(num_workers), strict=bool(strict),
                         overlay_grid=bool(overlay_grid), overlay_grid_size=int(overlay_grid_size),
                         progress=progress, run_settings=run_settings,
                         amp_dtype=resolve_amp(amp, device, key="amp"))
