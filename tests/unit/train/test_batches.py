"""The device-side data path: the same samples, order and augmentation as the per-item reference path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunevlseg.data.cache import PreparedSplit, augment_pair
from tunevlseg.train.augment import PARAM_KEYS, Augment, changed
from tunevlseg.train.batches import Batches, SampleSet
from tunevlseg.train.loop import make_loader


@pytest.fixture(scope="module")
def split(make_prepared):
    return PreparedSplit(make_prepared("tissue", n=40, seed=5), "train")


def test_parameters_are_those_of_the_reference_draws():
    """Augment.params draws what data.cache.augment_pair draws, in the same order, from the same seed."""
    aug = Augment(seed=3)
    image, mask = torch.rand(3, 16, 16), (torch.rand(1, 16, 16) > 0.5).float()
    hits = {"affine": 0, "photometric": 0}
    for index in range(200):
        params = aug.params(epoch=2, index=index)
        ref_image, ref_mask = augment_pair(image, mask, np.random.default_rng([3, 2, index]))
        batch = {k: torch.as_tensor(params[k])[None] for k in PARAM_KEYS}
        out_image, out_mask = Augment.apply(image[None].clone(), mask[None].clone(), batch)
        torch.testing.assert_close(out_image[0], ref_image, rtol=0, atol=1e-6)
        assert torch.equal(out_mask[0], ref_mask)
        hits["affine"] += bool(params["affine"])
        hits["photometric"] += bool(params["photometric"])
    # p = 0.2 each: 40 expected of 200; binomial sd ≈ 5.7
    assert 20 < hits["affine"] < 60 and 20 < hits["photometric"] < 60


def test_views_are_changed_draws_of_the_same_distribution():
    aug = Augment(seed=0)
    views = [aug.draw_view(v, r) for v in (1, 2) for r in range(300)]
    assert all(v["affine"] or v["photometric"] for v in views)
    both = sum(bool(v["affine"] and v["photometric"]) for v in views)
    # given "something applied": P(both) = 0.04 / 0.36 = 1/9 → 67 of 600 expected
    assert 40 < both < 95
    assert aug.draw_view(1, 5)["theta"].tolist() == Augment(seed=0).draw_view(1, 5)["theta"].tolist()
    picks = [aug.pick(0, i, 3) for i in range(300)]
    assert set(picks) == {0, 1, 2}


def test_batches_equal_the_reference_loader_over_epochs(split):
    """Same shuffling (one generator), same per-sample augmentation, batched on the device."""
    reference = make_loader(split, 8, True, True, seed=4, workers=0)
    batches = Batches(split, 8, torch.device("cpu"), shuffle=True, seed=4, augment=Augment(4))
    for epoch in range(2):
        reference.dataset.set_epoch(epoch)
        batches.set_epoch(epoch)
        ref = list(reference)
        new = list(batches)
        assert len(ref) == len(new) == len(batches)
        for a, b in zip(ref, new, strict=True):
            assert a["index"].tolist() == b.index.tolist()
            torch.testing.assert_close(b.images, a["image"], rtol=0, atol=1e-6)
            assert torch.equal(b.masks, a["mask"])
            assert b.prompts == list(a["prompt"])
    assert torch.equal(reference.generator.get_state(), batches.generator.get_state())


def test_workers_see_the_epoch(split):
    """Persistent workers draw the augmentation of the epoch the sampler is in."""
    one = Batches(split, 8, torch.device("cpu"), shuffle=True, seed=1, augment=Augment(1))
    two = Batches(split, 8, torch.device("cpu"), shuffle=True, seed=1, augment=Augment(1), workers=2)
    for epoch in (0, 1):
        one.set_epoch(epoch)
        two.set_epoch(epoch)
        for a, b in zip(one, two, strict=True):
            assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)


def test_items_are_uint8_and_carry_their_parameters(split):
    item = SampleSet(split, Augment(0))[(3, 1)]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (*split.images.shape[1:],)
    assert item["mask"].dtype == torch.uint8
    expected = Augment(0).params(1, 3)
    assert bool(item["aug"]["affine"]) == bool(expected["affine"])
    assert changed({k: v[None] for k, v in item["aug"].items()}).item() == bool(
        expected["affine"] or expected["photometric"])


def test_a_training_epoch_never_ends_on_a_batch_of_one(split):
    """BatchNorm in train mode (fine-tuned CRIS neck) cannot take one sample: shuffled epochs drop such a
    last batch; evaluation still sees every sample."""
    n = len(split)
    size = n - 1  # n % (n - 1) == 1: the last batch would hold one sample
    train = Batches(split, size, torch.device("cpu"), shuffle=True, seed=1)
    sizes = [len(b) for b in train]
    assert sizes == [size] and train.drop_last
    assert sorted(int(i) for b in Batches(split, size, torch.device("cpu"), shuffle=True, seed=1)
                  for i in b.index) != list(range(n))  # one sample sits this epoch out
    evaluation = Batches(split, size, torch.device("cpu"), shuffle=False)
    assert [len(b) for b in evaluation] == [size, 1] and not evaluation.drop_last
    assert [len(b) for b in Batches(split, 8, torch.device("cpu"), shuffle=True, seed=1)] == \
        [8] * (n // 8) + ([n % 8] if n % 8 else [])
    bn = torch.nn.BatchNorm1d(4).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(torch.randn(1, 4))


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Rss:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no Rss in /proc/{pid}/smaps_rollup")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork") or not __import__("pathlib").Path("/proc/self/smaps_rollup")
                    .exists(), reason="needs Linux /proc")
def test_workers_do_not_carry_the_training_process_memory(split):
    """Workers start from the fork server, not by forking the trainer: a 512 MB tensor the parent holds and
    rewrites after they started (as training rewrites weights and activations) is not in them. Measured
    (tests/bench-style, 2 workers): forked workers 575 MB RSS each beside a 400 MB parent tensor, 1375 MB
    beside 1200 MB; fork-server workers 185 MB each either way."""
    from tunevlseg.train.batches import worker_context

    assert worker_context().get_start_method() in ("forkserver", "spawn")
    big = torch.ones(512 * 2**20 // 4)  # the model, allocated before the loader's workers start
    batches = Batches(split, 8, torch.device("cpu"), shuffle=True, seed=1, workers=2)
    iterator = iter(batches.loader)
    next(iterator)
    big.mul_(2.0)  # copy-on-write: a forked worker would keep the old pages
    next(iterator)
    pids = [w.pid for w in iterator._workers]
    rss = [_rss_mb(pid) for pid in pids]
    del iterator, batches, big
    assert len(rss) == 2 and max(rss) < 400, rss
