"""training.compile: compiled training equals eager training; a compiler failure falls back with a warning."""

from __future__ import annotations

import functools
import logging

import pytest
import torch

from tunevlseg.data.cache import PreparedSplit
from tunevlseg.prompts import build_learner
from tunevlseg.train import loop
from tunevlseg.train.loop import TrainSettings, train_prompts


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("tissue", n=16, seed=4)


def _history(adapter, prepared, folder, compile_: bool):
    torch.manual_seed(0)
    learner = build_learner("coop", adapter.dims, depth=2)
    settings = TrainSettings.from_dict({"epochs": 2, "batch_size": 8, "progress": False, "amp": False,
                                        "compile": compile_})
    return train_prompts(adapter, learner, PreparedSplit(prepared, "train"), PreparedSplit(prepared, "val"),
                         settings, folder, torch.device("cpu")).history


def test_a_failing_compiler_falls_back_to_the_same_training(tiny_adapter, prepared, tmp_path, monkeypatch, caplog):
    eager = _history(tiny_adapter, prepared, tmp_path / "eager", False)

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("InductorError: no C++ compiler found")
        return run

    monkeypatch.setattr(loop.torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="tunevlseg.train.loop"):
        fallback = _history(tiny_adapter, prepared, tmp_path / "fallback", True)
    assert "torch.compile failed (RuntimeError: InductorError: no C++ compiler found)" in caplog.text
    assert [r["val_dice"] for r in fallback] == [r["val_dice"] for r in eager]
    assert [r["train_loss"] for r in fallback] == [r["train_loss"] for r in eager]


def test_compiled_training_matches_eager(tiny_adapter, prepared, tmp_path, monkeypatch, caplog):
    """Dynamo's graph capture (eager backend: no C++ compiler needed in CI) gives the eager numbers."""
    eager = _history(tiny_adapter, prepared, tmp_path / "eager", False)
    calls = []
    real = torch.compile

    def capture(fn, **kwargs):
        calls.append(fn)
        return real(fn, backend="eager")

    monkeypatch.setattr(loop.torch, "compile", functools.partial(capture))
    with caplog.at_level(logging.WARNING, logger="tunevlseg.train.loop"):
        compiled = _history(tiny_adapter, prepared, tmp_path / "compiled", True)
    assert len(calls) == 2 and "torch.compile failed" not in caplog.text  # forward and forward_frozen, compiled
    for a, b in zip(eager, compiled, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert b["val_dice"] == pytest.approx(a["val_dice"], abs=1e-5)
