"""A tiny detector-shaped model and an in-memory data pipeline for exercising the trainer quickly.

The model takes ``(list[Tensor[3, H, W]], list[target])`` like MaskRCNN and returns ``{"loss_*": Tensor}``; it
draws from the global torch RNG during training (like RoI sampling does) so tests notice RNG states that are not
restored. The sampler is endless, seeded, and can save/restore its position.
"""
import os
import signal

import torch
from torch import nn


class DummyDetector(nn.Module):
    def __init__(self, *, num_classes: int = 3, width: int = 8, nan_at_call: int | None = None,
                 signal_at_call: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.cls = nn.Linear(width, num_classes + 1)
        self.box = nn.Linear(width, 4)
        self.nan_at_call = nan_at_call
        self.signal_at_call = signal_at_call
        self.calls = 0

    def forward(self, images, targets=None):
        x = torch.stack([img.float() / 255.0 for img in images])
        feats = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        if not self.training:
            # A fixed box inside the image (x1, y1, x2, y2) so overlays can be drawn.
            return [{"boxes": torch.tensor([[1.0, 1.0, 8.0, 8.0]]), "scores": torch.ones(1),
                     "labels": torch.ones(1, dtype=torch.int64),
                     "masks": torch.zeros(1, *img.shape[1:], dtype=torch.bool)} for img in images]
        self.calls += 1
        if self.signal_at_call is not None and self.calls == self.signal_at_call:
            os.kill(os.getpid(), signal.SIGTERM)
        # Random noise and subsampling stand in for the RPN/RoI samplers' use of the global RNG.
        feats = feats + 0.01 * torch.randn_like(feats)
        keep = torch.rand(feats.shape[0]) < 0.9
        keep[0] = True
        labels = torch.stack([t["labels"][0] for t in targets])
        boxes = torch.stack([t["boxes"][0] for t in targets]) / 32.0
        loss_cls = nn.functional.cross_entropy(self.cls(feats)[keep], labels[keep])
        loss_box = nn.functional.smooth_l1_loss(self.box(feats)[keep], boxes[keep])
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss_box = loss_box * float("nan")
        return {"loss_cls": loss_cls, "loss_box": loss_box}


class DummyDataset(torch.utils.data.Dataset):
    def __init__(self, n: int = 16, size: int = 16, num_classes: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(1, num_classes + 1, (n,), generator=g)
        xy = torch.rand(n, 2, generator=g) * size / 2
        self.boxes = torch.cat([xy, xy + size / 2], dim=1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        target = {"boxes": self.boxes[i : i + 1], "labels": self.labels[i : i + 1], "image_id": int(i)}
        return self.images[i], target


class EndlessSampler(torch.utils.data.Sampler):
    """Endless shuffled indices; ``state_dict`` is the number of indices handed out."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seed, self.position = size, seed, 0

    def __iter__(self):
        while True:
            epoch, offset = divmod(self.position, self.size)
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            self.position += 1
            yield int(order[offset])

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = int(state["position"])


def collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def make_loader(batch_size: int = 2, n: int = 16, seed: int = 0):
    dataset = DummyDataset(n=n, seed=seed)
    sampler = EndlessSampler(len(dataset), seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                                         num_workers=0)
    return loader, sampler


def make_trainer(run_dir, *, max_iter=6, checkpoint_period=3, evaluate_fn=None, model_kwargs=None, schedule=None,
                 model_cls=None, **kwargs):
    """build_trainer over a DummyDetector (or ``model_cls(**model_kwargs)``) with SGD and a step schedule (warm-up
    2, lr x0.1 at half-way)."""
    import functools

    from segdet.engine.defaults import build_trainer
    from segdet.engine.lr_scheduler import build_lr_scheduler
    from segdet.engine.optim import build_sgd
    from segdet.engine.rng import seed_all

    seed_all(0)
    model = (model_cls or DummyDetector)(**(model_kwargs or {}))
    optimizer = build_sgd(model, lr=0.05, momentum=0.9, weight_decay=1e-4)
    if schedule is None:
        schedule = functools.partial(build_lr_scheduler, policy="step", steps=(0.5,), warmup_iters=2)
    data_loader, sampler = make_loader()
    return build_trainer(model=model, optimizer=optimizer, schedule=schedule, data_loader=data_loader,
                         sampler=sampler, run_dir=run_dir, max_iter=max_iter, checkpoint_period=checkpoint_period,
                         log_period=1, evaluate_fn=evaluate_fn, progress_bar=False, tensorboard=False, **kwargs)
