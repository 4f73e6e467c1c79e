import pytest

from segdet.engine.launch import agree_on_run_dir, nonmain_rank_overrides, split_train_options


def test_split_train_options_rejects_unknown_keys():
    batch, options = split_train_options({"batch_size": 8, "max_iter": 10, "amp": "none", "keep_checkpoints": 2})
    assert batch == 8 and options == {"max_iter": 10, "amp": "none", "keep_checkpoints": 2}
    with pytest.raises(ValueError, match=r"unknown key\(s\) in the train config: \['max_itr'\]"):
        split_train_options({"batch_size": 8, "max_itr": 10})
    with pytest.raises(ValueError, match="batch_size"):
        split_train_options({"max_iter": 10})


def test_split_train_options_passes_hook_options_and_loss_weights():
    _, options = split_train_options({"batch_size": 2, "max_iter": 5, "checkpoint_period": 2, "eval_period": 0,
                                      "log_period": 1, "skip_nonfinite": True, "max_nonfinite_skips": 1,
                                      "loss_weights": {"loss_mask": 2.0}})
    assert options["loss_weights"] == {"loss_mask": 2.0} and options["checkpoint_period"] == 2
    # Built objects are the script's business, never config keys.
    with pytest.raises(ValueError, match=r"\['hooks', 'schedule'\]"):
        split_train_options({"batch_size": 2, "max_iter": 5, "schedule": None, "hooks": []})


def test_nonmain_rank_overrides(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    assert nonmain_rank_overrides([]) == []
    monkeypatch.setenv("RANK", "1")
    assert nonmain_rank_overrides(["a=1"]) == ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    assert nonmain_rank_overrides(["hydra/job_logging=none"]) == ["hydra.output_subdir=null"]


def test_single_process_keeps_its_run_dir(tmp_path):
    assert agree_on_run_dir(tmp_path / "r") == (tmp_path / "r").resolve()
