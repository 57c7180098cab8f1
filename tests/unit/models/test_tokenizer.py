"""The real CLIP BPE tokenizer: ids, the end-of-text index in padded batches, and CoOp's init phrase."""

from __future__ import annotations

import logging

import pytest
import torch

from tunevlseg.models.clipseg import CLIPSegAdapter
from tunevlseg.prompts import build_learner
from tunevlseg.tune import CellSpec, make_learner

SOT, EOT = 49406, 49407
A_PHOTO_OF_A = [320, 1125, 539, 320]  # "a", "photo", "of", "a" (each with </w>)


def _tiny_clipseg(eos_token_id: int, seed: int = 0):
    """A random CLIPSeg small everywhere except its 49,408-token vocabulary."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    torch.manual_seed(seed)
    config = CLIPSegConfig(
        text_config=dict(vocab_size=49408, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16, reduce_dim=8, extract_layers=[0, 1, 2], decoder_num_attention_heads=2,
        decoder_intermediate_size=16)
    return CLIPSegForImageSegmentation(config).eval()


@pytest.fixture(scope="module", params=[EOT, 2], ids=["eos-49407", "legacy-eos-2"])
def adapter(request, clip_tokenizer):
    return CLIPSegAdapter(_tiny_clipseg(request.param), clip_tokenizer).requires_grad_(False).eval()


def test_vocabulary_and_ids(clip_tokenizer):
    assert len(clip_tokenizer) == 49408
    assert clip_tokenizer("a photo of a polyp")["input_ids"] == [SOT, *A_PHOTO_OF_A, 6833, 335, EOT]
    assert clip_tokenizer.convert_ids_to_tokens(clip_tokenizer("a skin lesion")["input_ids"]) == [
        "<|startoftext|>", "a</w>", "skin</w>", "le", "sion</w>", "<|endoftext|>"]
    assert (clip_tokenizer.bos_token_id, clip_tokenizer.eos_token_id, clip_tokenizer.pad_token_id) == (SOT, EOT, EOT)


def test_eot_index_in_padded_batches(adapter):
    """pad = eos = 49407: the end-of-text index is the first 49407 of each row, for either config."""
    batch = adapter.tokenize(["a photo of a polyp", "polyp", "a small red skin lesion"])
    assert batch.input_ids.shape == (3, 8)
    assert batch.eot_index.tolist() == [7, 3, 7]  # "polyp" and "lesion" are two BPE tokens each
    assert batch.input_ids[1].tolist() == [SOT, 6833, 335] + [EOT] * 5
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("prompted", [False, True])
def test_padding_never_changes_a_rows_text_feature(adapter, prompted):
    """A short text padded with 49407s gives the feature it has alone — only true if the pooled token is its
    own end-of-text token (shifted by n with prompts), not a padding token or the batch's last position."""
    learner = build_learner("coop", adapter.dims, 2) if prompted else None
    prompts = learner(None).text if prompted else None
    n = 4 if prompted else 0
    with torch.no_grad():
        batch = adapter.encode_text(adapter.tokenize(["a photo of a polyp", "polyp"], n), prompts)
        alone = adapter.encode_text(adapter.tokenize(["polyp"], n), prompts)
        other = adapter.encode_text(adapter.tokenize(["red disc"], n), prompts)  # also two word tokens
    torch.testing.assert_close(batch[1:], alone, atol=1e-6, rtol=0)
    assert not torch.allclose(batch[0], batch[1])
    # causal attention: pooling before the words (an index not shifted by n) would make these equal
    assert not torch.allclose(alone, other, atol=1e-4)


def test_unprompted_text_feature_equals_the_stock_model(adapter):
    texts = ["a photo of a polyp", "polyp"]
    enc = adapter.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = adapter.encode_text(adapter.tokenize(texts))
        stock = adapter.model.clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    stock = getattr(stock, "pooler_output", stock)
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=0)


def _spec(init_text: str, method: str = "coop") -> CellSpec:
    return CellSpec(model="clipseg", method=method, dataset="d", weights="w", init_text=init_text)


def test_coop_starts_from_the_word_embeddings_of_a_photo_of_a(adapter):
    table = adapter.model.clip.text_model.embeddings.token_embedding.weight
    expected = table[torch.tensor(A_PHOTO_OF_A)]
    torch.testing.assert_close(adapter.token_embeddings_for("a photo of a", 4), expected, atol=0, rtol=0)
    for method in ("coop", "cocoop", "maple"):
        learner = make_learner(_spec("a photo of a", method), adapter, 2, {})
        torch.testing.assert_close(learner.ctx[0].detach(), expected, atol=0, rtol=0)
        assert not torch.allclose(learner.ctx[1].detach(), table[torch.tensor(A_PHOTO_OF_A)])
    off = make_learner(_spec("a photo of a", "maple"), adapter, 2, {"init_from_text": False})
    assert not torch.allclose(off.ctx[0].detach(), expected)


def test_init_text_of_the_wrong_length_is_refused_with_a_warning(adapter, caplog):
    with caplog.at_level(logging.WARNING, logger="tunevlseg.models.text_prompts"):
        learner = make_learner(_spec("a photo of"), adapter, 1, {})
    assert "'a photo of'" in caplog.text and "3 tokens" in caplog.text and "n_ctx = 4" in caplog.text
    assert learner.ctx[0].detach().std() < 0.03  # N(0, 0.02²), not the embeddings
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tunevlseg.models.text_prompts"):
        make_learner(_spec("a photo of a"), adapter, 1, {})
    assert caplog.text == ""
