"""Shared fixtures: a tiny random CLIPSeg saved to a local folder and loaded like public weights; the real
CLIP BPE tokenizer."""

from __future__ import annotations

import gzip
from importlib import metadata

import pytest
import torch

from tunevlseg.models.clipseg import CLIPSegAdapter, load_clipseg
from tunevlseg.models.standin import build_standin, build_tokenizer, save_standin
from tunevlseg.prompts import ModelDims

TINY_ARCH = dict(image_size=32, patch_size=8, vision_width=32, vision_layers=4, vision_heads=2, text_width=24,
                 text_layers=3, text_heads=2, projection_dim=16, reduce_dim=8, extract_layers=[0, 1, 2])

# A tiny CRIS (CRISConfig fields): one bottleneck per stage, text 16 × 3 layers, one decoder layer.
TINY_CRIS_ARCH = dict(image_size=32, layers=[1, 1, 1, 1], width=8, embed_dim=32, text_width=16, text_heads=2,
                      text_layers=3, fpn_out=[8, 16, 32], num_layers=1, num_head=2, dim_ffn=32)
# A tiny SAM 3 (models.sam3.loading.sam3_config keys): ViT 32 × 3 on an 8 × 8 grid in 4 × 4 windows, text 24 × 3.
TINY_SAM3_ARCH = dict(image_size=32, patch_size=4, vision_width=32, vision_layers=3, vision_heads=2, window_size=4,
                      global_attn_indexes=[2], text_width=24, text_layers=3, text_heads=2, hidden=32, detr_layers=1,
                      detr_heads=2, num_queries=8)
TINY_ARCHS = {"clipseg": TINY_ARCH, "cris": TINY_CRIS_ARCH, "sam3": TINY_SAM3_ARCH}
TINY_WORDS = ["red", "green", "blue", "disc", "polyp"]
# Method hyper-parameters that fit the tiny models (CLIPSeg text 24 + vision 32 = 56 wide: 4 heads divide it).
TINY_HPARAMS = {"cocoop": dict(hidden=8), "maple": dict(coupling="mlp8"), "shared_separate": dict(latent=8),
                "shared_attention": dict(heads=4, dropout=0.0, ffn=40)}

# The full CLIPSeg ViT-B/16 widths: learners are built on these for the parameter-count formulas.
VIT_B16 = ModelDims(text_width=512, vision_width=768, image_feature_dim=512, max_text_depth=12, max_vision_depth=12)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = build_tokenizer(["red", "green", "blue", "disc", "polyp"])
    model = build_standin(TINY_ARCH, tokenizer)
    out = tmp_path_factory.mktemp("tiny_clipseg")
    save_standin(model, tokenizer, out)
    return out


@pytest.fixture
def tiny_adapter(tiny_model_dir):
    model, tokenizer = load_clipseg(str(tiny_model_dir))
    adapter = CLIPSegAdapter(model, tokenizer)
    adapter.requires_grad_(False)
    return adapter.eval()


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """{model: folder}: every registered model's tiny stand-in, saved in its public format."""
    from tunevlseg.models.registry import REGISTRY, build_standin

    out = {}
    for name in REGISTRY:
        torch.manual_seed(0)
        tokenizer = build_tokenizer(TINY_WORDS, max_length=24)
        adapter = build_standin(name, TINY_ARCHS[name], tokenizer).eval()
        folder = tmp_path_factory.mktemp(f"tiny_{name}")
        adapter.save(folder)
        out[name] = folder
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one intra-op thread, restoring the previous count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_prepared(tmp_path_factory):
    """Factory: write a synthetic dataset in its raw layout and prepare it; returns the prepared folder."""
    from tunevlseg.data.prepare import prepare_dataset
    from tunevlseg.data.synthetic import write_synthetic

    def make(kind: str = "tissue", n: int = 24, seed: int = 3, size: int = 32):
        root = tmp_path_factory.mktemp(f"{kind}_data")
        write_synthetic(kind, root / "raw", n=n, image_size=size, seed=seed)
        prepare_dataset(root / "raw", root / "prepared", size=size)
        return root / "prepared"

    return make


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte → character table in its order: printable bytes as themselves, the rest mapped above 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(rest))]


@pytest.fixture(scope="session")
def clip_tokenizer():
    """The real CLIP BPE tokenizer (49,408 tokens), built from the vocabulary file the open-clip-torch wheel
    ships (a test dependency installed --no-deps; never imported: it needs torchvision)."""
    from transformers import CLIPTokenizer

    try:
        vocab_file = next(f for f in metadata.files("open-clip-torch") or ()
                          if f.name == "bpe_simple_vocab_16e6.txt.gz").locate()
    except (metadata.PackageNotFoundError, StopIteration):
        pytest.fail("open-clip-torch (its CLIP BPE vocabulary file) is missing: run `make setup`")
    lines = gzip.open(vocab_file, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:48895]]  # 49,152 - 256 - 2 merges, as CLIP
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    # vocab=/merges= as objects: transformers 5 silently ignores vocab_file=
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)


# --------------------------------------------------------------------------- test tiers (pyproject.toml markers)

#: Test modules that run `tunevlseg` jobs as real processes and kill them: the `subprocess` tier.
SUBPROCESS_MODULES = frozenset({"test_resume.py", "test_trial_start_kill.py", "test_warm.py"})
#: Folders whose tests run Snakemake: the `workflow` tier.
WORKFLOW_FOLDERS = frozenset({"integration", "slurm"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.path
        if path.name in SUBPROCESS_MODULES:
            item.add_marker(pytest.mark.subprocess)
        if WORKFLOW_FOLDERS & set(path.parts[-3:-1]):
            item.add_marker(pytest.mark.workflow)


@pytest.fixture(scope="module")
def two_torch_threads():
    """At most 2 torch threads for a module's tests (the full-size modules), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)
