"""Model registry: which methods each model runs, CRIS model folders and files, CRIS stand-in and cell."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from tunevlseg.models.cris import CRISAdapter
from tunevlseg.models.cris.loading import CHECKPOINT_FILE, build_cris_standin, load_cris, save_cris_folder
from tunevlseg.methods import METHODS
from tunevlseg.models.registry import load_adapter, supported_methods, supports
from tunevlseg.models.standin import build_tokenizer
from tunevlseg.pretrain import pretrain_standin
from tunevlseg.prompts import learner_class
from tunevlseg.tune import CellRunner, CellSpec

CRIS_ARCH = dict(image_size=32, layers=[1, 1, 1, 1], width=8, embed_dim=32, text_width=16, text_heads=2,
                 text_layers=2, fpn_out=[8, 16, 32], num_layers=1, num_head=2, dim_ffn=32)
WORDS = ["red", "green", "blue", "white", "disc", "polyp"]


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """Tiny tensors: intra-op threads only add synchronisation (seconds per forward on a busy 2-core box)."""


@pytest.fixture(scope="module")
def cris_dir(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = build_tokenizer(WORDS, max_length=16)
    model = build_cris_standin(CRIS_ARCH, tokenizer).eval()
    for m in model.modules():  # non-default statistics, so that loading them is checked too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    out = tmp_path_factory.mktemp("cris_model")
    save_cris_folder(model, tokenizer, out)
    return out, model, tokenizer


def test_model_methods_agree_with_the_learners(cris_dir):
    """A prompt method is in a model's list exactly when the model has the layers it prompts."""
    out, _, _ = cris_dir
    dims = load_adapter("cris", str(out)).dims
    for method, info in METHODS.items():
        runnable = info.is_baseline or learner_class(method).max_depth(dims) >= 1
        assert supports("cris", method) == runnable, method
    assert supported_methods("clipseg") == tuple(METHODS)
    assert supported_methods("cris") == ("zeroshot", "finetune", "coop", "cocoop")
    with pytest.raises(KeyError, match="unknown model 'sam'"):
        supports("sam", "coop")


def test_cris_folder_uses_the_community_checkpoint_layout(cris_dir):
    out, model, _ = cris_dir
    state = torch.load(out / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    assert set(state) == {f"module.{k}" for k in model.state_dict()}
    assert "module.backbone.visual.attnpool.connect.0.weight" in state and "module.proj.txt.weight" in state


def test_cris_folder_loads_frozen_and_reproduces_the_saved_model(cris_dir):
    out, model, tokenizer = cris_dir
    adapter = load_adapter("cris", str(out))
    assert isinstance(adapter, CRISAdapter)
    assert not any(p.requires_grad for p in adapter.parameters())
    adapter.train()
    assert not adapter.model.training  # frozen BatchNorm stays in eval mode
    reference = CRISAdapter(model.requires_grad_(False), tokenizer)  # frozen too: same attention kernels
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text = adapter.tokenize(["red disc", "green polyp"])
    with torch.no_grad():
        assert torch.equal(adapter(images, text), reference(images, reference.tokenize(["red disc", "green polyp"])))


def test_cris_weights_errors_name_the_file(tmp_path, cris_dir):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_cris(str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match="cris_config.json"):
        load_cris(str(tmp_path))
    out, _, _ = cris_dir
    with pytest.raises(ValueError, match="RN18"):
        load_cris(str(out / CHECKPOINT_FILE), backbone="RN18")


def test_cris_checkpoint_file_is_read_with_the_named_backbone(cris_dir):
    """A tiny checkpoint file read as RN50: strict loading lists the mismatches instead of loading."""
    out, _, _ = cris_dir
    with pytest.raises(ValueError, match=r"does not match the model:[\s\S]*shape mismatches"):
        load_cris(str(out / CHECKPOINT_FILE), backbone="RN50", image_size=64, tokenizer=str(out))


@pytest.fixture(scope="module")
def shapes_prepared(make_prepared):
    return make_prepared("shapes", n=48, seed=5)


@pytest.fixture(scope="module")
def cris_standin(tmp_path_factory, shapes_prepared):
    out = tmp_path_factory.mktemp("standin") / "cris-standin"
    report = pretrain_standin(shapes_prepared, out, arch=CRIS_ARCH, vocabulary=WORDS, epochs=2, batch_size=16,
                              model="cris", check_every=0)
    return out, report


def test_cris_standin_is_saved_loadable_with_trained_batchnorm(cris_standin):
    out, report = cris_standin
    assert json.loads((out / "grounding.json").read_text()) == report
    assert 0 <= report["val_dice_right_prompt"] <= 1 and report["epochs"] == 2
    adapter = load_adapter("cris", str(out))
    bn = adapter.model.backbone.visual.bn1
    # end-to-end pretraining updates BatchNorm statistics (frozen only when tuning prompts)
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_cris_cocoop_cell_runs_and_records_depth(cris_standin, make_prepared, tmp_path):
    out, _ = cris_standin
    prepared = make_prepared("tissue", n=20, seed=3)
    space = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
             "depth": {"type": "int", "low": 1, "high": 5},
             "hidden": {"type": "categorical", "choices": [8, 16]}}
    spec = CellSpec(model="cris", method="cocoop", dataset="tissue", weights=str(out), n_trials=2, search=space,
                    training={"epochs": 1, "batch_size": 8, "progress": False})
    runner = CellRunner(spec, prepared, tmp_path / "cell")
    runner.run()
    trials = pd.read_csv(tmp_path / "cell" / "trials.csv")
    assert (trials["state"] == "COMPLETE").sum() == 2
    assert trials["depth"].between(1, 2).all()  # clamped to the stand-in's 2 text layers
    saved = torch.load(tmp_path / "cell" / "trials" / "000" / "best.pt", weights_only=True)
    hidden, depth = int(trials.loc[0, "param_hidden"]), int(trials.loc[0, "depth"])
    n_params = sum(v.numel() for v in saved.values())
    # the d·(2560 + 1537h) at RN50 widths, here with text width D = 16 and C5 width F = 32:
    # d·(n·D + D + (F + 1 + D)·h)  (context, LayerNorm scale, meta-net Linear(F,h) and Linear(h,D,no bias))
    assert n_params == trials.loc[0, "n_trainable"] == depth * (4 * 16 + 16 + (32 + 1 + 16) * hidden)
