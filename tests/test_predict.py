import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from segdet.config import compose_model_config
from segdet.engine.predictor import (
    JOURNAL_NAME,
    PredictionInterrupted,
    assign_image_ids,
    default_class_names,
    encode_mask_rle,
    list_images,
    load_model,
    predict,
    predict_files,
    read_image,
    resolve_class_names,
    to_coco_results,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A randomly initialised maskrcnn_small with 3 classes, saved like training saves it."""
    from omegaconf import OmegaConf

    from segdet.modeling import build_model

    cfg = compose_model_config("maskrcnn_small")  # the file lists its differences from maskrcnn_r50_fpn
    cfg["num_classes"] = 3
    torch.manual_seed(0)
    model = build_model(cfg)
    resolved = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"model": model.state_dict(), "model_config": resolved, "label_to_category_id": {1: 11, 2: 22, 3: 33},
                "class_names": ["circle", "square", "triangle"]}, path)
    return path


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (96, 128, 3), dtype=np.uint8)).save(d / "000139.jpg")
    Image.fromarray(rng.randint(0, 255, (80, 64), dtype=np.uint8)).save(d / "street.png")  # greyscale
    (d / "readme.txt").write_text("not an image")
    return d


def test_list_images(image_dir):
    assert [p.name for p in list_images(image_dir)] == ["000139.jpg", "street.png"]
    assert list_images(image_dir / "street.png") == [image_dir / "street.png"]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(image_dir / "nope")
    empty = image_dir / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="contains no images"):
        list_images(empty)


def test_read_image(image_dir):
    img = read_image(image_dir / "street.png")
    assert img.dtype == torch.uint8 and img.shape == (3, 80, 64)
    assert torch.equal(img[0], img[1])  # greyscale expanded to RGB
    bad = image_dir / "broken.jpg"
    bad.write_bytes(b"not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image(bad)


def test_assign_image_ids():
    paths = [Path("b.jpg"), Path("000007.jpg"), Path("a.png"), Path("3.png")]
    assert assign_image_ids(paths) == [8, 7, 9, 3]
    assert assign_image_ids([Path("x.jpg"), Path("y.jpg")]) == [0, 1]
    with pytest.raises(ValueError, match="same numeric stem"):
        assign_image_ids([Path("1.jpg"), Path("001.png")])


def test_coco_results_and_rle_roundtrip():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 7:, :2] = True
    pred = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 5.0], [0.0, 7.0, 2.0, 10.0]]), "scores": torch.tensor([0.9, 0.4]),
            "labels": torch.tensor([2, 1]), "masks": masks}
    results = to_coco_results(pred, 5, {1: 10, 2: 20})
    assert [r["category_id"] for r in results] == [20, 10]
    assert results[0]["bbox"] == pytest.approx([3.0, 2.0, 6.0, 3.0]) and results[0]["image_id"] == 5
    assert results[1]["score"] == pytest.approx(0.4)
    json.dumps(results)  # counts must be str, not bytes
    for r, m in zip(results, masks):
        rle = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
        assert np.array_equal(mask_utils.decode(rle).astype(bool), m.numpy())
    assert [r["category_id"] for r in to_coco_results(pred, 5)] == [2, 1]
    assert encode_mask_rle(torch.zeros(4, 4, dtype=torch.bool))["size"] == [4, 4]


def test_class_names():
    assert default_class_names(80)[0] == "person" and default_class_names(80)[-1] == "toothbrush"
    coco90 = default_class_names(90)
    assert len(coco90) == 90 and coco90[0] == "person" and coco90[11] == "N/A" and coco90[12] == "stop sign"
    assert default_class_names(2) == ["class_1", "class_2"]
    assert resolve_class_names(["x", "y"], {"class_names": ["a", "b"]}, 2) == ["x", "y"]
    assert resolve_class_names(None, {"class_names": ["a", "b"]}, 2) == ["a", "b"]
    assert resolve_class_names(None, {}, 2) == ["class_1", "class_2"]
    with pytest.raises(ValueError, match="num_classes=2"):
        resolve_class_names(["x"], {}, 2)


def test_predict_in_process_writes_results(small_checkpoint, image_dir, tmp_path):
    from omegaconf import OmegaConf

    cfg_model = OmegaConf.create(compose_model_config("maskrcnn_small"))  # num_classes 4: checkpoint's 3 wins
    out = tmp_path / "out"
    results = predict(cfg_model=cfg_model, checkpoint=small_checkpoint, input=image_dir, output=out,
                      score_threshold=0.0)
    written = json.loads((out / "predictions.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert len(written) > 0  # threshold 0 keeps the random model's detections
    assert {r["image_id"] for r in written} <= {139, 140}
    assert {r["category_id"] for r in written} <= {11, 22, 33}
    ids = json.loads((out / "image_ids.json").read_text())
    assert ids == {"000139.jpg": 139, "street.png": 140}
    for r in written:
        h, w = r["segmentation"]["size"]
        assert (h, w) == ((96, 128) if r["image_id"] == 139 else (80, 64))
        x, y, bw, bh = r["bbox"]
        assert bw >= 0 and bh >= 0 and x >= 0 and x + bw <= w + 1e-3 and y + bh <= h + 1e-3
    # Small images are drawn upscaled (shorter side >= 512 px) so captions do not hide the objects.
    assert Image.open(out / "000139.png").size == (128 * 6, 96 * 6)
    assert Image.open(out / "street.png").size == (64 * 8, 80 * 8)

    high = predict(cfg_model=cfg_model, checkpoint=small_checkpoint, input=image_dir / "street.png",
                   output=tmp_path / "out2", score_threshold=1.0)
    assert all(r["score"] >= 1.0 for r in high)


def test_predict_bad_inputs(small_checkpoint, image_dir, tmp_path):
    from omegaconf import OmegaConf

    from segdet.engine.checkpoint import CheckpointError

    cfg_model = OmegaConf.create(compose_model_config("maskrcnn_small"))
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        predict(cfg_model=cfg_model, checkpoint=small_checkpoint, input=tmp_path / "missing_dir", output=tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        predict(cfg_model=cfg_model, checkpoint=tmp_path / "nothing.pt", input=image_dir, output=tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"123")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        predict(cfg_model=cfg_model, checkpoint=garbage, input=image_dir, output=tmp_path)
    with pytest.raises(ValueError, match="score_threshold"):
        predict(cfg_model=cfg_model, checkpoint=small_checkpoint, input=image_dir, output=tmp_path, score_threshold=2)


@pytest.mark.slow  # two interpreter starts with torch + hydra: ~10 s CPU, often > 20 s on a shared machine
def test_predict_script_end_to_end(small_checkpoint, image_dir, tmp_path):
    out = tmp_path / "script_out"
    cmd = [sys.executable, str(REPO / "scripts" / "predict.py"), "model=maskrcnn_small",
           f"checkpoint={small_checkpoint}", f"input={image_dir}", f"output={out}", "device=cpu",
           "score_threshold=0.0", "class_names=[c1,c2,c3]"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) > 0 and set(results[0]) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert (out / "000139.png").is_file() and (out / "street.png").is_file()
    assert not (tmp_path / "outputs").exists()  # hydra writes into the output directory only

    bad = subprocess.run(cmd[:4] + [f"input={tmp_path / 'no_such_images'}", f"output={tmp_path / 'o'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert "no_such_images" in bad.stdout + bad.stderr

    unset = subprocess.run(cmd[:2] + [f"input={image_dir}", f"output={tmp_path / 'o'}"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert unset.returncode == 1 and "checkpoint" in unset.stdout + unset.stderr
    assert "Traceback" not in unset.stdout + unset.stderr


# ---- 1. checkpoint rules (as scripts/eval.py) ------------------------------------------------------------


def test_checkpoint_run_dir_uses_newest_and_model_from_checkpoint(small_checkpoint, tmp_path):
    from segdet.engine.checkpoint import checkpoint_dir, checkpoint_name

    ckpt = torch.load(small_checkpoint, weights_only=True)
    run = tmp_path / "run"
    checkpoint_dir(run).mkdir(parents=True)
    older = dict(ckpt, model={k: torch.zeros_like(v) for k, v in ckpt["model"].items()})
    torch.save(older, checkpoint_dir(run) / checkpoint_name(10))
    torch.save(ckpt, checkpoint_dir(run) / checkpoint_name(20))
    # No model config given: the one stored in the checkpoint (3 classes) is built.
    model, info = load_model(None, run, "cpu")
    assert info["checkpoint_path"].endswith("model_0000020.pt")
    assert model.num_classes == 3
    ref = ckpt["model"]
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items() if k in ref)

    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="checkpoint=.*empty_run is a directory without checkpoints"):
        load_model(None, empty, "cpu")


def test_model_override_that_does_not_fit_names_differences(small_checkpoint):
    from omegaconf import OmegaConf

    from segdet.engine.checkpoint import CheckpointError

    cfg_model = OmegaConf.create(compose_model_config("maskrcnn_small"))
    cfg_model.roi_heads.mask_head.conv_dims = [32, 32]
    with pytest.raises(CheckpointError, match=r"differences: .*roi_heads\.mask_head\.conv_dims"):
        load_model(cfg_model, small_checkpoint, "cpu")


def test_checkpoint_naming_its_config_needs_model(small_checkpoint, tmp_path):
    # A converted checkpoint names its config instead of storing it.
    ckpt = torch.load(small_checkpoint, weights_only=True)
    named = tmp_path / "named.pt"
    torch.save(dict(ckpt, model_config="maskrcnn_small"), named)
    with pytest.raises(ValueError, match="choose one with model=NAME"):
        load_model(None, named, "cpu")


# ---- 2. many images: inputs, batches, progress, summary --------------------------------------------------


def _write_images(d: Path, n: int, size=(64, 80), start=0) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(start)
    out = []
    for i in range(start, start + n):
        p = d / f"{i:06d}.png"
        Image.fromarray(rng.randint(0, 255, (*size, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def test_list_images_recursive_glob_and_list_file(tmp_path):
    top = _write_images(tmp_path / "imgs", 2)
    deep = _write_images(tmp_path / "imgs" / "sub" / "deeper", 1, start=5)
    (tmp_path / "imgs" / "notes.md").write_text("x")
    assert list_images(tmp_path / "imgs") == top
    assert list_images(tmp_path / "imgs", recursive=True) == sorted(top + deep)
    assert list_images(str(tmp_path / "imgs" / "*.png")) == top
    assert list_images(str(tmp_path / "imgs" / "**" / "*.png")) == sorted(top + deep)
    with pytest.raises(FileNotFoundError, match="matches no image files"):
        list_images(str(tmp_path / "imgs" / "*.jpg"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my images\nimgs/sub/deeper/000005.png\n\n{top[0]}\nimgs/sub/deeper/000005.png\n")
    assert list_images(listing) == [tmp_path / "imgs/sub/deeper/000005.png", top[0]]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(FileNotFoundError, match="names no files"):
        list_images(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="recursive=true"):
        list_images(tmp_path / "imgs" / "sub")


def _model_and_cfg(small_checkpoint):
    model, info = load_model(None, small_checkpoint, "cpu")
    return model, info


class _CountingModel(torch.nn.Module):
    """Wraps a model, recording the batch sizes it is called with and the mask_output it ran under."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.calls: list[int] = []
        self.modes: list[str] = []

    @property
    def mask_output(self):
        return self.inner.mask_output

    @mask_output.setter
    def mask_output(self, value):
        self.inner.mask_output = value

    def forward(self, images):
        self.calls.append(len(images))
        self.modes.append(self.inner.mask_output)
        return self.inner(images)


def test_batched_workers_match_one_by_one_and_summary(small_checkpoint, tmp_path, caplog):
    paths = _write_images(tmp_path / "imgs", 3)
    model, _ = _model_and_cfg(small_checkpoint)
    one = predict_files(model, paths, tmp_path / "one", score_threshold=0.0, batch_size=1, write_overlays=False,
                        progress="none")
    counting = _CountingModel(model)
    with caplog.at_level("INFO", logger="segdet.engine.predictor"):
        batched = predict_files(counting, paths, tmp_path / "batched", score_threshold=0.0, batch_size=2,
                                num_workers=2, write_overlays=False, progress="plain")
    assert counting.calls == [2, 1]
    assert set(counting.modes) == {"deferred"}  # masks pasted box by box, never D x H x W
    assert model.mask_output == "image"  # restored afterwards
    assert len(one) > 0 and [r["image_id"] for r in batched] == [r["image_id"] for r in one]
    for a, b in zip(one, batched):
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3) and a["score"] == pytest.approx(b["score"], abs=1e-4)
    text = caplog.text
    assert "predict: 3/3 images (100%)" in text and "ETA" in text
    assert f"Predicted 3 images (0 skipped as unreadable, 0 done by an earlier run), {len(one)} detections," in text
    assert "images/s" in text


def test_deferred_masks_encode_like_full_masks(small_checkpoint, tmp_path):
    from segdet.evaluation.coco_results import deferred_mask_pasting

    model, _ = _model_and_cfg(small_checkpoint)
    images = [read_image(p) for p in _write_images(tmp_path / "imgs", 2, size=(90, 70))]
    with torch.no_grad():
        full = model(images)
        with deferred_mask_pasting(model):
            deferred = model(images)
    for f, d in zip(full, deferred):
        assert "masks" not in d and d["mask_probs"].dim() == 3 and d["image_size"] == (90, 70)
        a, b = to_coco_results(f, 1), to_coco_results(d, 1)
        assert len(a) > 0 and a == b  # identical RLEs and boxes


# ---- 3. nothing lost: unreadable files, strict, journal and resume ---------------------------------------


def test_unreadable_files_skipped_named_and_counted(small_checkpoint, image_dir, tmp_path, caplog):
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.fromarray(np.zeros((8, 8), np.int32), mode="I").save(image_dir / "deep.tif")  # 32-bit: converts
    model, _ = _model_and_cfg(small_checkpoint)
    paths = list_images(image_dir)
    with caplog.at_level("INFO"):
        results = predict_files(model, paths, tmp_path / "out", score_threshold=0.0, batch_size=2,
                                write_overlays=False, progress="none")
    assert "skipping cannot read image" in caplog.text and "broken.jpg" in caplog.text
    assert "(1 skipped as unreadable" in caplog.text
    ids = {r["image_id"] for r in results}
    assert 139 in ids and ids <= set(json.loads((tmp_path / "out" / "image_ids.json").read_text()).values())
    lines = (tmp_path / "out" / JOURNAL_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    assert [Path(r["file"]).name for r in records] == [p.name for p in paths]
    assert [("skipped" in r) for r in records] == [p.name == "broken.jpg" for p in paths]


def test_strict_stops_at_first_unreadable_after_writing_what_was_done(small_checkpoint, tmp_path):
    paths = _write_images(tmp_path / "imgs", 4)
    paths[2].write_bytes(b"garbage")
    model, _ = _model_and_cfg(small_checkpoint)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"strict=true: cannot read image .*000002\.png"):
        predict_files(model, paths, out, score_threshold=0.0, batch_size=1, write_overlays=False, strict=True,
                      progress="none")
    written = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in written} == {0, 1}
    assert len(written) > 0


def test_resume_skips_done_images_and_repairs_torn_line(small_checkpoint, tmp_path):
    paths = _write_images(tmp_path / "imgs", 4)
    model, _ = _model_and_cfg(small_checkpoint)
    out = tmp_path / "out"
    full = predict_files(model, paths, tmp_path / "ref", score_threshold=0.0, batch_size=1, write_overlays=False,
                         progress="none")
    predict_files(model, paths[:2], out, score_threshold=0.0, batch_size=1, write_overlays=False, progress="none")
    journal = out / JOURNAL_NAME
    with open(journal, "ab") as f:
        f.write(b'{"file": "/half/writ')  # a kill in the middle of a line
    counting = _CountingModel(model)
    resumed = predict_files(counting, paths, out, score_threshold=0.0, batch_size=1, write_overlays=False,
                            progress="none")
    assert sum(counting.calls) == 2  # only the two images not done before
    assert resumed == full
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 + 4 and all(json.loads(line) for line in lines)
    with pytest.raises(ValueError, match=r"other settings \(score_threshold: 0.0 there, 0.5 now\)"):
        predict_files(model, paths, out, score_threshold=0.5, write_overlays=False, progress="none")


def _run_until(cmd, journal: Path, min_lines: int, sig, timeout=240):
    import signal
    import time

    # Its own process group, signalled as a whole, as a terminal's Ctrl-C or a job scheduler does: the decoding
    # workers get the signal too.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"finished before it could be stopped:\n{proc.stdout.read()}")
            if journal.exists() and journal.read_text().count("\n") >= 1 + min_lines:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no progress in the journal")
        os.killpg(proc.pid, sig)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, output


@pytest.mark.slow  # four interpreter starts with torch + hydra
def test_script_killed_and_rerun_finishes_each_image_once(small_checkpoint, tmp_path):
    import signal

    num = 16
    paths = _write_images(tmp_path / "imgs", num, size=(96, 128))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "scripts" / "predict.py"), f"checkpoint={small_checkpoint}",
           f"input={tmp_path / 'imgs'}", f"output={out}", "score_threshold=0.0", "batch_size=1", "num_workers=1",
           "overlays=false", "progress=plain"]
    journal = out / JOURNAL_NAME

    def lines_done():
        return journal.read_text().count("\n") - 1

    code, log = _run_until(cmd, journal, 2, signal.SIGKILL)
    assert code == -signal.SIGKILL, log
    after_kill = lines_done()
    assert 2 <= after_kill < num

    code, log = _run_until(cmd, journal, after_kill + 2, signal.SIGTERM)
    assert code == 143, log
    assert "stopped after" in log and "run the same command again" in log
    after_term = lines_done()
    assert after_kill < after_term < num
    partial = {r["image_id"] for r in json.loads((out / "predictions.json").read_text())}
    assert partial and partial <= set(range(after_term))  # what was done, written on the way out

    code, log = _run_until(cmd, journal, after_term + 2, signal.SIGINT)  # Ctrl-C
    assert code == 130, log
    after_int = lines_done()
    assert after_term < after_int < num

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Predicted {num} images (0 skipped as unreadable, {after_int} done by an earlier run)" in \
        done.stdout + done.stderr
    records = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert sorted(Path(r["file"]).name for r in records) == sorted(p.name for p in paths)  # each exactly once
    results = json.loads((out / "predictions.json").read_text())
    per_image: dict[int, list] = {}
    for r in results:
        per_image.setdefault(r["image_id"], []).append(r)
    assert set(per_image) == set(range(num))
    by_record = {r["image_id"]: r["detections"] for r in records}
    assert all(per_image[i] == by_record[i] for i in range(num))  # no image's detections twice


# ---- 5. pictures: upscaled overlays and the contact sheet ------------------------------------------------


def test_overlay_grid_contact_sheet_of_first_n(small_checkpoint, tmp_path):
    (tmp_path / "imgs").mkdir()
    paths = []
    for i, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]):
        paths.append(tmp_path / "imgs" / f"{i:06d}.png")
        Image.new("RGB", (60, 40), color).save(paths[-1])
    model, _ = _model_and_cfg(small_checkpoint)
    out = tmp_path / "out"
    predict_files(model, paths, out, score_threshold=0.5, batch_size=2, overlay_grid=True, overlay_grid_size=3,
                  progress="none")
    assert Image.open(out / "000000.png").size == (60 * 13, 40 * 13)  # 40 px drawn at >= 512 px
    sheet = np.asarray(Image.open(out / "overlay_grid.png").convert("RGB"))
    tile, gap, caption = 256, 4, 18
    assert sheet.shape[:2] == (2 * (tile + caption + gap) + gap, 2 * (tile + gap) + gap)  # 3 cells in a 2 x 2 grid
    # Cell 4 is empty (background); cells 1..3 show the first three overlays.
    cell = lambda r, c: sheet[gap + r * (tile + caption + gap) + tile // 2, gap + c * (tile + gap) + tile // 2]
    assert tuple(cell(1, 1)) == (40, 40, 40) and tuple(cell(0, 0)) != (40, 40, 40)
    # The first cell is the first overlay, reduced to 256 x 171 px (its mean colour survives the filtering).
    first = np.asarray(Image.open(out / "000000.png").convert("RGB")).astype(float).mean(axis=(0, 1))
    top = gap + (tile - 171) // 2
    shown = sheet[top + 2:top + 169, gap + 2:gap + tile - 2].astype(float).mean(axis=(0, 1))
    assert np.abs(first - shown).max() < 3
    second = np.asarray(Image.open(out / "000001.png").convert("RGB")).astype(float).mean(axis=(0, 1))
    assert np.abs(first - second).max() > 3  # so the comparison above tells the images apart
    with pytest.raises(ValueError, match="needs overlays=true"):
        predict_files(model, paths, tmp_path / "o2", overlay_grid=True, write_overlays=False, progress="none")


def test_progress_bar_on_a_terminal_and_default_batch_size(capsys, monkeypatch):
    from segdet.engine.predictor import _Progress, default_batch_size

    assert default_batch_size("cpu") == 2
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = _Progress(4, 1, "auto")
    assert bar.bar is not None  # a terminal gets tqdm
    bar.update(2)
    bar.close()
    err = capsys.readouterr().err
    assert "3/4" in err and "<" in err  # tqdm's "elapsed<remaining" ETA
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert _Progress(4, 0, "auto").mode == "plain"


def test_predict_under_bf16_autocast_matches_float32_and_checks_the_key(small_checkpoint, image_dir, tmp_path):
    """amp=bf16 runs the model under CPU autocast; the detections are those of float32 up to bf16 rounding
    of the network (same images, boxes within a few pixels for the strongest detections)."""
    ref = predict(cfg_model=None, checkpoint=small_checkpoint, input=image_dir / "000139.jpg",
                  output=tmp_path / "f32", score_threshold=0.0, overlays=False)
    low = predict(cfg_model=None, checkpoint=small_checkpoint, input=image_dir / "000139.jpg",
                  output=tmp_path / "bf16", score_threshold=0.0, overlays=False, amp="bf16")
    assert len(ref) > 0 and len(low) > 0
    assert all(isinstance(r["score"], float) for r in low)
    header = json.loads((tmp_path / "bf16" / "predictions.jsonl").read_text().splitlines()[0])
    assert header["settings"]["amp"] == "bf16"  # a float32 journal is not resumed under bf16, nor the reverse
    best_ref, best_low = max(ref, key=lambda r: r["score"]), max(low, key=lambda r: r["score"])
    assert best_low["score"] == pytest.approx(best_ref["score"], abs=0.05)
    with pytest.raises(ValueError, match="amp"):
        predict(cfg_model=None, checkpoint=small_checkpoint, input=image_dir, output=tmp_path / "bad", amp="half")
