"""SignalHook: SIGTERM / SIGINT save a checkpoint and end the run with 128 + signal number."""
import logging
import signal

from segdet.engine.checkpoint import find_last_checkpoint, read_checkpoint
from segdet.engine.hooks import StopRequest

from .dummy import make_trainer


def test_sigterm_saves_checkpoint_and_reports_exit_code(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="segdet.train")
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=0, model_kwargs={"signal_at_call": 4})
    result = trainer.train()
    assert result.signum == signal.SIGTERM and result.exit_code == 143
    assert result.iteration == 4
    assert find_last_checkpoint(tmp_path).name == "model_0000004.pt"
    assert not (tmp_path / "metrics.json").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert "Received SIGTERM" in caplog.text and "Stopped by a signal at iteration 4" in caplog.text
    # The stop is announced after the checkpoint it points to was written.
    assert caplog.text.index("Saved checkpoint") < caplog.text.index("Stopped by a signal")


class _LoaderKilledBySigint:
    """What a DataLoader does on Ctrl-C: its workers get the SIGINT too and die, so the next fetch fails."""

    def __init__(self, loader, fail_at):
        self.loader, self.fail_at = loader, fail_at

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.fail_at:
                signal.raise_signal(signal.SIGINT)
                raise RuntimeError("DataLoader worker (pid 1234) exited unexpectedly")
            yield batch


def test_sigint_that_kills_the_loader_still_saves(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=0)
    trainer.data_loader = _LoaderKilledBySigint(trainer.data_loader, fail_at=3)
    result = trainer.train()
    assert result.exit_code == 130 and result.iteration == 3
    assert read_checkpoint(find_last_checkpoint(tmp_path))["iteration"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_loader_error_without_a_signal_is_raised(tmp_path):
    class Broken:
        def __iter__(self):
            raise RuntimeError("disk gone")
            yield

    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=0)
    trainer.data_loader = Broken()
    try:
        trainer.train()
    except RuntimeError as exc:
        assert "disk gone" in str(exc)
    else:
        raise AssertionError("the loader's error was swallowed")
    assert find_last_checkpoint(tmp_path) is None


def test_stop_request_restores_previous_handlers_and_reports_first_signal():
    seen = []
    previous = signal.getsignal(signal.SIGTERM)
    with StopRequest(on_signal=seen.append) as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM and seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == previous
