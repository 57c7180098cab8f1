"""CRIS in plain PyTorch: shapes at RN50 widths, strict weight loading, deep text prompts, frozen BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunevlseg.models.cris import CRIS, CRISAdapter, CRISConfig, load_clip_weights, load_cris_checkpoint
from tunevlseg.models.standin import build_tokenizer
from tunevlseg.prompts import build_learner

TINY = dict(layers=(1, 1, 1, 1), width=8, embed_dim=64, vocab_size=60, context_length=24, text_width=32,
            text_heads=4, text_layers=3, fpn_out=(16, 32, 64), num_head=4, dim_ffn=64, image_size=64)
TEXTS = ["red disc", "the green polyp", "blue"]


def _tiny(seed: int = 0) -> CRIS:
    torch.manual_seed(seed)
    model = CRIS(CRISConfig(**TINY))
    for m in model.modules():  # non-trivial BatchNorm statistics so that loading them is tested too
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def _inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, 64, 64, generator=g)
    ids = torch.tensor([[1, 7, 8, 9, 2, 0], [1, 10, 2, 0, 0, 0]])[:batch]
    pad = (ids != 0).long()
    eot = torch.tensor([4, 2])[:batch]
    return images, ids, pad, eot


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """Tiny tensors: intra-op threads only add synchronisation (seconds per forward on a busy 2-core box)."""


@pytest.fixture(scope="module")
def tiny():
    return _tiny(0)


@pytest.fixture(scope="module")
def adapter():
    tokenizer = build_tokenizer(["red", "green", "blue", "disc", "polyp"], max_length=24)
    model = _tiny(0)
    model.requires_grad_(False)
    return CRISAdapter(model, tokenizer)


# ------------------------------------------------------------------------------------- shapes
def test_rn50_shapes_at_416():
    torch.manual_seed(0)
    model = CRIS(CRISConfig(text_layers=2, vocab_size=64, context_length=16)).eval()
    seen = {}
    mods = {"c3": model.backbone.visual.layer2, "c4": model.backbone.visual.layer3,
            "c5": model.backbone.visual.attnpool, "neck": model.neck, "proj": model.proj}
    hooks = [m.register_forward_hook(lambda _m, _a, out, k=k: seen.__setitem__(k, out.shape)) for k, m in mods.items()]
    ids = torch.tensor([[1, 5, 6, 2, 0]])
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 416, 416), ids, (ids != 0).long(), torch.tensor([3]))
    for h in hooks:
        h.remove()
    assert seen["c3"] == (1, 512, 52, 52)
    assert seen["c4"] == (1, 1024, 26, 26)
    assert seen["c5"] == (1, 1024, 13, 13)
    assert seen["neck"] == (1, 512, 26, 26)
    assert seen["proj"] == (1, 1, 104, 104)
    assert logits.shape == (1, 1, 416, 416)
    assert model.proj.txt.out_features == 256 * 9 + 1
    assert model.backbone.visual.attnpool.positional_embedding.shape == (50, 2048)  # CLIP RN50's 7x7+1 grid


def test_official_key_names(tiny):
    keys = set(tiny.state_dict())
    for k in ["backbone.visual.conv1.weight", "backbone.visual.layer1.0.downsample.0.weight",
              "backbone.visual.attnpool.positional_embedding", "backbone.visual.attnpool.q_proj.weight",
              "backbone.visual.attnpool.connect.1.running_var", "backbone.token_embedding.weight",
              "backbone.positional_embedding", "backbone.transformer.resblocks.0.attn.in_proj_weight",
              "backbone.transformer.resblocks.0.mlp.c_fc.weight", "backbone.ln_final.weight",
              "backbone.text_projection", "backbone.logit_scale", "neck.txt_proj.1.running_mean",
              "neck.coordconv.0.conv1.0.weight", "neck.f4_proj5.0.weight", "decoder.layers.0.multihead_attn.in_proj_weight",
              "decoder.layers.2.ffn.3.weight", "decoder.norm.weight", "proj.vis.1.0.weight", "proj.txt.weight"]:
        assert k in keys, k


# ------------------------------------------------------------------------------------ weights
@pytest.mark.parametrize("layout", ["dataparallel", "nested_plain", "plain"])
def test_cris_checkpoint_roundtrip_is_exact(tiny, tmp_path, layout):
    state = tiny.state_dict()
    if layout == "dataparallel":
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    elif layout == "nested_plain":
        obj = {"state_dict": dict(state)}
    else:
        obj = dict(state)
    path = tmp_path / "cris.pth"
    torch.save(obj, path)
    fresh = _tiny(123)
    images, ids, pad, eot = _inputs()
    with torch.no_grad():
        assert not torch.equal(fresh(images, ids, pad, eot), tiny(images, ids, pad, eot))
        load_cris_checkpoint(fresh, path)
        assert torch.equal(fresh(images, ids, pad, eot), tiny(images, ids, pad, eot))


def test_renamed_key_is_reported(tiny, tmp_path):
    state = {f"module.{k}": v for k, v in tiny.state_dict().items()}
    state["module.neck.aggr.0.weightX"] = state.pop("module.neck.aggr.0.weight")
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError) as err:
        load_cris_checkpoint(_tiny(1), path)
    msg = str(err.value)
    assert "broken.pth" in msg and "missing" in msg and "unexpected" in msg
    missing = next(line for line in msg.splitlines() if "missing" in line)
    unexpected = next(line for line in msg.splitlines() if "unexpected" in line)
    assert missing.rstrip().endswith(": neck.aggr.0.weight")
    assert unexpected.rstrip().endswith(": module.neck.aggr.0.weightX") or unexpected.rstrip().endswith(": neck.aggr.0.weightX")


class _Holder(nn.Module):
    """A module holding the CLIP weights under OpenAI's names, for a TorchScript archive like RN50.pt."""

    def __init__(self, backbone):
        super().__init__()
        for name, child in backbone.named_children():
            setattr(self, name, child)
        for name, p in backbone.named_parameters(recurse=False):
            setattr(self, name, p)

    def forward(self, x):
        return x * self.logit_scale


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace builds the stand-in RN50.pt
def test_clip_weights_from_torchscript_archive(tmp_path):
    source = _tiny(5).backbone
    path = tmp_path / "RN50.pt"
    torch.jit.trace(_Holder(source), torch.ones(1)).save(str(path))
    model = _tiny(6)
    load_clip_weights(model, path)
    loaded, ref = model.backbone.state_dict(), source.state_dict()
    for k, v in ref.items():
        if k.startswith("visual.attnpool.connect."):  # CRIS's new branch is not in CLIP
            continue
        assert torch.equal(loaded[k], v), k


def test_clip_weights_plain_state_dict_strictness(tmp_path):
    source = _tiny(5).backbone
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("visual.attnpool.connect.")}
    state["context_length"] = torch.tensor(24)  # OpenAI metadata entries are ignored
    state["positional_embedding"] = torch.cat([state["positional_embedding"], torch.zeros(53, 32)])  # 77 positions
    torch.save(state, tmp_path / "clip.pt")
    model = _tiny(6)
    load_clip_weights(model, tmp_path / "clip.pt")
    assert torch.equal(model.backbone.visual.layer4[0].conv2.weight, source.visual.layer4[0].conv2.weight)
    assert torch.equal(model.backbone.positional_embedding, source.positional_embedding)
    del state["ln_final.weight"]
    torch.save(state, tmp_path / "clip_broken.pt")
    with pytest.raises(ValueError, match="ln_final.weight"):
        load_clip_weights(model, tmp_path / "clip_broken.pt")


# ------------------------------------------------------------------------------------ prompts
def test_adapter_without_prompts_matches_model(adapter):
    text = adapter.tokenize(TEXTS)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = adapter(images, text)
        ref = adapter.model(adapter.normalize(images), text.input_ids, text.attention_mask, text.eot_index)
        ref_none = adapter.model(adapter.normalize(images), text.input_ids, text.attention_mask, text.eot_index, None)
    assert out.shape == (3, 1, 64, 64)
    assert torch.equal(out, ref) and torch.equal(ref, ref_none)


def test_extra_padding_does_not_change_logits(tiny):
    images, ids, pad, eot = _inputs()
    wide = torch.cat([ids, torch.full((2, 3), 5)], dim=1)  # junk tokens marked as padding
    wide_pad = torch.cat([pad, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(tiny(images, wide, wide_pad, eot), tiny(images, ids, pad, eot))


def test_adapter_dims(adapter):
    d = adapter.dims
    assert (d.text_width, d.vision_width, d.image_feature_dim, d.max_text_depth, d.max_vision_depth) == (32, None, 64, 3, 0)


def test_vision_methods_are_refused(adapter):
    with pytest.raises(ValueError):
        build_learner("vpt", adapter.dims, depth=1)


# ------------------------------------------------------------------------------------ batchnorm
def test_batchnorm_stats_frozen_in_eval_mode():
    model = _tiny(3)
    adapter = CRISAdapter(model, build_tokenizer(["red"], max_length=24))
    adapter.train()  # the adapter keeps the frozen model in eval mode
    assert not any(m.training for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    images, ids, pad, eot = _inputs()
    model(images, ids, pad, eot).sum().backward()
    after = model.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())


def test_depth1_prompt_equals_inserting_the_same_tokens(tiny):
    """Prompt embeddings of real tokens behave exactly like those tokens typed after the start token."""
    _, ids, pad, eot = _inputs()
    ctx_ids = torch.tensor([11, 12, 13])
    ctx = tiny.backbone.token_embedding.weight[ctx_ids][None]
    typed = torch.cat([ids[:, :1], ctx_ids.expand(2, -1), ids[:, 1:]], dim=1)
    typed_pad = torch.cat([pad[:, :1], torch.ones(2, 3, dtype=torch.long), pad[:, 1:]], dim=1)
    with torch.no_grad():
        words, state, mask = tiny.encode_text(ids, pad, eot, [ctx])
        ref_words, ref_state, ref_mask = tiny.encode_text(typed, typed_pad, eot + 3)
    torch.testing.assert_close(state, ref_state)
    torch.testing.assert_close(words[mask], ref_words[ref_mask])
    assert torch.equal(mask, ref_mask)


@pytest.mark.parametrize("depth", [1, 5, 11])
def test_trainable_counts_at_rn50_widths(depth):
    """CoOp 2048·d and CoCoOp d·(2560 + 1537h) with the dims a CRIS-R50 adapter exposes."""
    with torch.device("meta"):
        dims = CRISAdapter(CRIS(CRISConfig.rn50()), build_tokenizer(["polyp"], max_length=77)).dims
        assert sum(p.numel() for p in build_learner("coop", dims, depth).parameters()) == 2048 * depth
        for h in (32, 64, 128):
            learner = build_learner("cocoop", dims, depth, hidden=h)
            assert sum(p.numel() for p in learner.parameters()) == depth * (2560 + 1537 * h), h


# ------------------------------------------------------------------ TorchScript archives: weights, never code
class _Loud(nn.Module):
    """A module whose TorchScript ``__setstate__`` has a side effect: it runs only if the archive's code runs."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.arange(6.0).reshape(2, 3))
        self.register_buffer("count", torch.tensor([7]))
        self.scratch = torch.zeros(1)  # a plain tensor attribute: not part of the state dict

    def forward(self, x):
        return x @ self.weight.t() + self.scratch

    @torch.jit.export
    def __getstate__(self):
        return (self.weight, self.count, self.scratch, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]):
        print("ARCHIVE CODE RAN")
        self.weight = state[0]
        self.count = state[1]
        self.scratch = state[2]
        self.training = state[3]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace/script build the archives
def test_torchscript_state_dict_equals_jit_load_without_running_code(tmp_path, capfd):
    from tunevlseg.models.cris.torchscript import read_torchscript_state_dict

    source = _tiny(5).backbone
    path = tmp_path / "RN50.pt"
    torch.jit.trace(_Holder(source), torch.ones(1)).save(str(path))
    ours = read_torchscript_state_dict(path)
    theirs = torch.jit.load(str(path)).state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs)

    loud = tmp_path / "loud.pt"
    torch.jit.script(_Loud()).save(str(loud))
    capfd.readouterr()
    with pytest.raises(ValueError, match=rf"{loud}: no weights found.*convert it once"):
        read_torchscript_state_dict(loud)  # custom state: refused, and nothing of the archive ran
    assert "ARCHIVE CODE RAN" not in capfd.readouterr().out
    torch.jit.load(str(loud))  # what the old loader did: the archive's code runs
    assert "ARCHIVE CODE RAN" in capfd.readouterr().out


def test_a_pickle_that_names_other_globals_is_refused(tmp_path):
    import zipfile

    from tunevlseg.models.cris.torchscript import read_torchscript_state_dict

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "cris.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", __import__("pickle").dumps(Evil(), protocol=2))
        zf.writestr("archive/constants.pkl", b"")
        zf.writestr("archive/code/__torch__.py", "")
    with pytest.raises(ValueError, match=r"cris.pth: .*refusing to load posix.system"):
        read_torchscript_state_dict(path)
    with pytest.raises(ValueError, match="cris.pth"):
        load_cris_checkpoint(_tiny(0), path)
    assert not (tmp_path / "pwned").exists()
