"""A MaskRCNN that SIGKILLs its own process once, to test torchrun restarts (see test_train_script.py)."""
import os
import signal

from segdet.modeling import MaskRCNN


class KillOnceMaskRCNN(MaskRCNN):
    """Rank ``kill_rank`` kills itself at its ``kill_at_call``-th training forward, in the first attempt only
    (torchrun numbers attempts in TORCHELASTIC_RESTART_COUNT)."""

    def __init__(self, *, kill_rank: int = 1, kill_at_call: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.kill_rank, self.kill_at_call, self.calls = kill_rank, kill_at_call, 0

    def forward(self, images, targets=None):
        if self.training:
            self.calls += 1
            first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
            if first_attempt and self.calls == self.kill_at_call and int(os.environ.get("RANK", 0)) == self.kill_rank:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(images, targets)
