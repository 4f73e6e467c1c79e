import itertools
import logging

import numpy as np
import pytest

from segdet.data.samplers import InferenceSampler, TrainingBatchSampler, aspect_ratio_groups, mix_seed


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_first_epoch_visits_every_index_once_and_epochs_differ():
    sampler = TrainingBatchSampler(10, global_batch_size=5, seed=3)
    batches = take(sampler, 4)
    epoch0 = [i for b in batches[:2] for i, _ in b]
    epoch1 = [i for b in batches[2:] for i, _ in b]
    assert sorted(epoch0) == list(range(10)) and sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    seeds = [s for b in batches for _, s in b]
    assert len(set(seeds)) == len(seeds)  # every sample gets its own augmentation seed
    assert take(TrainingBatchSampler(10, global_batch_size=5, seed=3), 4) == batches
    assert take(TrainingBatchSampler(10, global_batch_size=5, seed=4), 1) != batches[:1]
    unshuffled = take(TrainingBatchSampler(4, global_batch_size=3, shuffle=False), 2)
    assert [i for b in unshuffled for i, _ in b] == [0, 1, 2, 3, 0, 1]


@pytest.mark.parametrize("grouped", [False, True])
def test_ranks_share_the_global_batch(grouped):
    groups = aspect_ratio_groups(np.where(np.arange(37) % 3 == 0, 0.75, 1.5)) if grouped else None
    single = take(TrainingBatchSampler(37, global_batch_size=8, seed=1, group_ids=groups), 12)
    for world in (2, 4, 8):
        per_rank = [take(TrainingBatchSampler(37, global_batch_size=8, seed=1, rank=r, world_size=world,
                                              group_ids=groups), 12) for r in range(world)]
        assert all(len(b) == 8 // world for batches in per_rank for b in batches)
        for step in range(12):
            assert [k for r in range(world) for k in per_rank[r][step]] == single[step]
    if grouped:
        for batch in single:
            assert len({int(groups[i]) for i, _ in batch}) == 1


def test_global_batch_must_divide_by_world_size():
    with pytest.raises(ValueError, match=r"global_batch_size \(6\) must be a positive multiple of world_size \(4\)"):
        TrainingBatchSampler(10, global_batch_size=6, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        TrainingBatchSampler(10, global_batch_size=4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="group_ids"):
        TrainingBatchSampler(10, global_batch_size=4, group_ids=[0, 1])


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("resume_world", [1, 2])
def test_state_restore_continues_the_same_stream(grouped, resume_world):
    groups = aspect_ratio_groups(np.linspace(0.5, 2.0, 23)) if grouped else None
    reference = take(TrainingBatchSampler(23, global_batch_size=4, seed=5, group_ids=groups), 30)
    run = TrainingBatchSampler(23, global_batch_size=4, seed=5, group_ids=groups)
    run.num_batches = 17  # as TrainLoader counts delivered batches
    state = run.state_dict()
    assert state["num_batches"] == 17 and state["epoch"] == pytest.approx(17 * 4 / 23)
    resumed = [TrainingBatchSampler(23, global_batch_size=4, seed=5, group_ids=groups, rank=r,
                                    world_size=resume_world) for r in range(resume_world)]
    for s in resumed:
        s.load_state_dict(state)
    parts = [take(s, 13) for s in resumed]
    merged = [[k for p in parts for k in p[step]] for step in range(13)]
    assert merged == reference[17:]


def test_resume_with_changed_batch_size_warns_and_keeps_samples_seen(caplog):
    state = TrainingBatchSampler(50, global_batch_size=4).state_dict()
    state["num_batches"] = 10
    sampler = TrainingBatchSampler(50, global_batch_size=8)
    with caplog.at_level(logging.WARNING, logger="segdet.data.samplers"):
        sampler.load_state_dict(state)
    assert sampler.num_batches == 5 and "global_batch_size (4 -> 8)" in caplog.text
    with pytest.raises(KeyError, match="num_batches"):
        sampler.load_state_dict({})


def test_inference_sampler_covers_each_index_once():
    for size, world in [(10, 3), (2, 4), (7, 1)]:
        parts = [list(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)]
        assert [i for p in parts for i in p] == list(range(size))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert [len(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)] == list(map(len, parts))


def test_mix_seed_is_stable_and_spreads():
    assert mix_seed(0, 1, 2) == mix_seed(0, 1, 2)
    values = {mix_seed(0, 1, k) for k in range(1000)}
    assert len(values) == 1000 and all(0 <= v < 2**63 for v in values)
    assert mix_seed(0, 0, 5) != mix_seed(0, 1, 5)
