import json

from segdet.engine.logger import MetricsLogger


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_records_average_each_window_and_keep_current_lr(tmp_path):
    log = MetricsLogger(run_dir=tmp_path, max_iter=5, log_period=2, progress_bar=False)
    for it in range(1, 6):
        log.log_iteration(it, {"loss_a": float(it), "lr": 0.1 * it, "time": 1.0, "memory_mb": 10.0 * it})
    log.log_metrics(5, {"bbox/AP": 50.0})
    log.close()
    recs = _records(tmp_path)
    assert [r["iteration"] for r in recs] == [2, 4, 5, 5]
    assert recs[0]["loss_a"] == 1.5 and recs[1]["loss_a"] == 3.5 and recs[2]["loss_a"] == 5.0
    assert recs[1]["lr"] == 0.4 and recs[1]["memory_mb"] == 40.0
    assert recs[3] == {"iteration": 5, "val/bbox/AP": 50.0}
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_resume_drops_records_past_the_checkpoint(tmp_path):
    log = MetricsLogger(run_dir=tmp_path, max_iter=10, log_period=1, progress_bar=False, tensorboard=False)
    for it in range(1, 8):
        log.log_iteration(it, {"loss": 1.0})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 8, "lo')  # cut short by a kill
    log = MetricsLogger(run_dir=tmp_path, max_iter=10, start_iter=4, log_period=1, progress_bar=False,
                        tensorboard=False)
    log.log_iteration(5, {"loss": 2.0})
    log.close()
    assert [(r["iteration"], r["loss"]) for r in _records(tmp_path)] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0),
                                                                          (5, 2.0)]


def test_disabled_logger_writes_nothing(tmp_path):
    log = MetricsLogger(run_dir=tmp_path / "r", max_iter=3, enabled=False)
    log.log_iteration(1, {"loss": 1.0, "time": 0.5})
    log.close()
    assert not (tmp_path / "r").exists()
    assert log.eta_seconds(1) == 1.0
