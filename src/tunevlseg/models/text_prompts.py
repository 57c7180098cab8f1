"""What every model adapter shares for text prompts: tokenising with room for n context tokens,
and placing prompt tokens right after the start token.

Semantics (docs/explanation/methods.md): prompt 0 is inserted after the start token at the embeddings
(the padding mask grows by n, the end-of-text index shifts by n); prompt k >= 1 replaces
those n slots on the input of layer k+1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class TextBatch:
    """Tokenised prompts: ids, padding mask and the end-of-text position per row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    eot_index: torch.Tensor


def first_eos(eos_id: int) -> Callable[[list[int]], int]:
    """End-of-text position = the first ``eos_id`` (the last token if there is none)."""
    return lambda ids: ids.index(eos_id) if eos_id in ids else len(ids) - 1


def highest_id(ids: list[int]) -> int:
    """End-of-text position = the highest token id (legacy CLIP configs with eos_token_id 2)."""
    return max(range(len(ids)), key=lambda i: ids[i])


class PromptTokenizer:
    """Tokenises prompts (cached per text), truncated so that ``n_ctx`` context tokens still fit."""

    def __init__(self, tokenizer, max_length: int, eot_position: Callable[[list[int]], int]):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.eot_position = eot_position
        self._cache: dict[tuple[str, int], tuple[list[int], int]] = {}

    def tokens(self, text: str, n_ctx: int = 0) -> tuple[list[int], int]:
        """Token ids of ``text`` and its end-of-text position (of the unprompted sequence)."""
        key = (text, n_ctx)
        if key not in self._cache:
            ids = self.tokenizer(text, truncation=True, max_length=self.max_length - n_ctx)["input_ids"]
            self._cache[key] = (ids, self.eot_position(ids))
        return self._cache[key]

    def __call__(self, texts: list[str], n_ctx: int = 0) -> TextBatch:
        """A padded batch; truncation keeps the start and end tokens."""
        rows = [self.tokens(t, n_ctx) for t in texts]
        length = max(len(ids) for ids, _ in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (ids, _) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
        return TextBatch(input_ids, attention_mask, torch.tensor([e for _, e in rows], dtype=torch.long))

    def word_embeddings(self, text: str, n_ctx: int, embedding: torch.nn.Embedding) -> torch.Tensor | None:
        """Embeddings of the words of ``text`` (no start/end token) if they are exactly ``n_ctx`` tokens;
        otherwise None, with a logged warning naming the text and its token count."""
        ids, eot = self.tokens(text, 0)
        words = ids[1:eot]
        if len(words) != n_ctx:
            log.warning("init_text %r tokenises to %d tokens, not n_ctx = %d: the context starts from "
                        "N(0, 0.02²) instead of its embeddings", text, len(words), n_ctx)
            return None
        return embedding.weight[torch.tensor(words, device=embedding.weight.device)].detach().clone()


def insert_prompt(x: torch.Tensor, padding: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert ``prompt`` (1 or B, n, D) after the start token of ``x`` (B, L, D); extend the padding mask."""
    batch, n = x.shape[0], prompt.shape[-2]
    x = torch.cat([x[:, :1], prompt.to(x.dtype).expand(batch, -1, -1), x[:, 1:]], dim=1)
    padding = torch.cat([padding[:, :1], padding.new_ones(batch, n), padding[:, 1:]], dim=1)
    return x, padding


def replace_prompt(x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Replace the n prompt slots after the start token of ``x`` with ``prompt`` (1 or B, n, D)."""
    n = prompt.shape[-2]
    return torch.cat([x[:, :1], prompt.to(x.dtype).expand(x.shape[0], -1, -1), x[:, 1 + n :]], dim=1)
