"""Tiny random-initialised CLIPSeg + word-level tokenizer: the offline stand-in for pretrained weights.

The stand-in is saved with ``save_pretrained`` so that it is loaded through the
very same ``load_clipseg(name_or_dir)`` path as the public checkpoints.
"""

from __future__ import annotations

from pathlib import Path

START, END, PAD, UNK = "<|startoftext|>", "<|endoftext|>", "<|pad|>", "<|unk|>"

# Words any stand-in knows besides the configured vocabulary (CoOp's default init phrase among them).
BASE_VOCABULARY = ["a", "photo", "of", "the", "an", "and", "."]


def build_tokenizer(words: list[str], max_length: int = 77):
    """A lower-casing word-level tokenizer over ``words`` with CLIP-style start/end tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, UNK, START, END])}
    for word in BASE_VOCABULARY + [w.lower() for w in words]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, vocab[START]), (END, vocab[END])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=START, eos_token=END, pad_token=PAD, unk_token=UNK, model_max_length=max_length
    )


def build_standin(arch: dict, tokenizer):
    """A random-initialised ``CLIPSegForImageSegmentation`` of the size given by ``arch``.

    ``arch`` keys: image_size, patch_size, vision_width, vision_layers, vision_heads,
    text_width, text_layers, text_heads, projection_dim, reduce_dim, extract_layers,
    and optionally conditional_layer (the decoder block that receives the FiLM
    conditioning; default 0 as in the public weights) and vision_attention_init (> 0:
    the vision encoder's query and key projections start from N(0, (g / sqrt(width))²)
    instead of the stock init, whose attention logits are so small that a tiny model trained
    for minutes keeps near-uniform attention — then appended vision prompts can only add
    one offset to every token, unlike in pretrained CLIP, whose attention is content-dependent;
    these draws use their own generator seeded 0, so the init does not depend on the global seed).
    """
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=arch["text_width"],
        intermediate_size=4 * arch["text_width"],
        num_hidden_layers=arch["text_layers"],
        num_attention_heads=arch["text_heads"],
        max_position_embeddings=arch.get("max_text_length", 32),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = dict(
        hidden_size=arch["vision_width"],
        intermediate_size=4 * arch["vision_width"],
        num_hidden_layers=arch["vision_layers"],
        num_attention_heads=arch["vision_heads"],
        image_size=arch["image_size"],
        patch_size=arch["patch_size"],
    )
    config = CLIPSegConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=arch["projection_dim"],
        reduce_dim=arch["reduce_dim"],
        extract_layers=list(arch["extract_layers"]),
        decoder_num_attention_heads=arch.get("decoder_heads", 4),
        decoder_intermediate_size=4 * arch["reduce_dim"],
        conditional_layer=arch.get("conditional_layer", 0),
        use_complex_transposed_convolution=False,
    )
    model = CLIPSegForImageSegmentation(config)
    gain = float(arch.get("vision_attention_init", 0) or 0)
    if gain > 0:
        import torch

        generator = torch.Generator().manual_seed(0)  # the same stand-in on every machine
        std = gain / arch["vision_width"] ** 0.5
        with torch.no_grad():
            for layer in model.clip.vision_model.encoder.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                    proj.weight.copy_(torch.randn(proj.weight.shape, generator=generator) * std)
    return model


def save_standin(model, tokenizer, out_dir: Path) -> None:
    """Save model and tokenizer so that ``load_clipseg(out_dir)`` reads them back."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
