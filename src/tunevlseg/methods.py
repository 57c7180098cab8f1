"""The method catalogue: one record per method, the single place its traits are written.

Plain data, no torch import: the Snakefile reads it at start to plan the grid and check the
config. Everything else derives from it — the learner registry (``tunevlseg.prompts``), which
models can run a method (``tunevlseg.models.registry.supports``: a method's modalities must be
among the model's), the config schema's method enum (a test keeps them equal), the report's row
order and baselines, and how ``tune`` treats a cell (a study or one evaluation; a fresh model
per trial when the method trains the model).

Adding a method: a learner module in ``tunevlseg/prompts/`` and one record here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Search keys every tuned method understands; they configure the optimiser, not the learner.
OPTIMISER_KEYS = ("lr", "weight_decay")
#: The prompt depth: searched by every prompt method, reaches the encoders only as len(prompts).
DEPTH_KEY = "depth"

_LR = {"type": "float", "low": 1e-5, "high": 5e-3, "log": True}
_WD = {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}
_DEPTH = {"type": "int", "low": 1, "high": 11}


@dataclass(frozen=True)
class Method:
    """What the workflow, the tuner and the report need to know about one method.

    ``learner``: ``module:Class`` of its ``PromptLearner`` (imported only when a cell runs).
    ``modalities``: which encoders get prompts (``text``, ``vision``); none for the baselines.
    ``uses_image_feature``: the learner is conditioned on the pooled image feature (CoCoOp).
    ``tuned``: the cell runs an Optuna study (False: one evaluation, e.g. zero-shot).
    ``trains_model``: every weight is trained (each trial starts from freshly loaded weights).
    ``hparams``: the learner's own hyper-parameters (keyword arguments of its ``__init__``), the
    names a config may use under ``methods.<name>.search`` / ``fixed`` besides lr, weight_decay, depth.
    ``search`` / ``fixed`` / ``training``: the paper's settings, under what a config sets for the method
    (merged key by key, ``tunevlseg.config.effective_settings``) — the reference code's search space, its
    semantics as fixed options where ours differ (docs/explanation/methods.md, "Where we deliberately differ"), training
    overrides (below the config's own ``training``).
    """

    name: str
    title: str
    learner: str
    modalities: tuple[str, ...] = ()
    uses_image_feature: bool = False
    tuned: bool = True
    trains_model: bool = False
    hparams: tuple[str, ...] = ()
    search: Mapping = field(default_factory=dict)
    fixed: Mapping = field(default_factory=dict)
    training: Mapping = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        """Not prompt tuning (no prompt depth): zero-shot and full fine-tuning."""
        return not self.modalities

    @property
    def searches_depth(self) -> bool:
        """Prompt methods search the depth; baselines have none."""
        return bool(self.modalities)

    @property
    def frozen_image_side(self) -> bool:
        """The image encoder is frozen and unprompted: its features are the same in every epoch and trial."""
        return not self.trains_model and "vision" not in self.modalities

    def accepted_search_keys(self) -> tuple[str, ...]:
        """Every key a config may give under ``search`` or ``fixed`` for this method."""
        return (*OPTIMISER_KEYS, *((DEPTH_KEY,) if self.searches_depth else ()), *self.hparams)

    def required_search_keys(self) -> tuple[str, ...]:
        """Keys a tuned method's search space (or fixed values) must give."""
        return ("lr", DEPTH_KEY) if self.searches_depth else ("lr",)


def _prompt_space(**extra) -> dict:
    return {"lr": _LR, "weight_decay": _WD, "depth": _DEPTH, **extra}


#: The reference code's semantics for vision prompts on CLIPSeg (the learners' defaults are ours).
_VISION_REFERENCE = {"prompts_in_decoder": True, "decoder_sees_next_prompt": True}
_VISION_OPTIONS = ("prompts_in_decoder", "decoder_sees_next_prompt")
_CATEGORICAL = "categorical"

#: The catalogue, in report order (baselines first, then text, vision, multimodal methods).
CATALOGUE: tuple[Method, ...] = (
    Method("zeroshot", "Zero-shot", "tunevlseg.prompts.zeroshot:ZeroShot", tuned=False),
    Method("finetune", "Full fine-tuning", "tunevlseg.prompts.finetune:FineTune", trains_model=True,
           search={"lr": _LR, "weight_decay": _WD}, training={"epochs": 40}),
    Method("coop", "CoOp", "tunevlseg.prompts.coop:CoOp", modalities=("text",), hparams=("init_from_text",),
           search=_prompt_space()),
    Method("cocoop", "CoCoOp", "tunevlseg.prompts.cocoop:CoCoOp", modalities=("text",), uses_image_feature=True,
           hparams=("hidden", "projection", "normalize_feature", "first_layer_init", "init_from_text"),
           search=_prompt_space(hidden={"type": _CATEGORICAL, "choices": [32, 64, 128]},
                                projection={"type": _CATEGORICAL, "choices": ["mlp", "lora"]}),
           fixed={"normalize_feature": False, "first_layer_init": "kaiming"}),
    Method("vpt", "VPT (deep)", "tunevlseg.prompts.vpt:VPT", modalities=("vision",), hparams=_VISION_OPTIONS,
           search=_prompt_space(), fixed=dict(_VISION_REFERENCE)),
    Method("maple", "MaPLe", "tunevlseg.prompts.maple:MaPLe", modalities=("text", "vision"),
           hparams=("coupling", "hidden", "coupling_layout", "first_layer_init", "init_from_text", *_VISION_OPTIONS),
           search=_prompt_space(coupling={"type": _CATEGORICAL,
                                          "choices": ["mlp32", "mlp64", "mlp96", "lora32", "lora64", "lora96"]}),
           fixed={"coupling_layout": "reference", "first_layer_init": "kaiming", "init_from_text": False,
                  **_VISION_REFERENCE}),
    Method("shared_attention", "Shared Attention", "tunevlseg.prompts.shared_attention:SharedAttention",
           modalities=("text", "vision"),
           hparams=("heads", "dropout", "ffn", "norm_first", "batch_first", "depth_init", *_VISION_OPTIONS),
           search=_prompt_space(heads={"type": _CATEGORICAL, "choices": [16, 20, 32]},
                                dropout={"type": "float", "low": 0.1, "high": 0.55},
                                ffn={"type": _CATEGORICAL, "choices": [1280, 1420]},
                                norm_first={"type": _CATEGORICAL, "choices": [True, False]}),
           fixed={"batch_first": False, "depth_init": "copied", **_VISION_REFERENCE}),
    Method("shared_separate", "Shared Separate", "tunevlseg.prompts.shared_separate:SharedSeparate",
           modalities=("text", "vision"), hparams=("latent", "depth_init", *_VISION_OPTIONS),
           search=_prompt_space(latent={"type": _CATEGORICAL, "choices": [32, 64]}),
           fixed={"depth_init": "copied", **_VISION_REFERENCE}),
)

METHODS: dict[str, Method] = {m.name: m for m in CATALOGUE}
#: Report row order.
METHOD_ORDER: tuple[str, ...] = tuple(METHODS)


def get_method(name: str) -> Method:
    """The record of ``name``; ``KeyError`` listing the known methods otherwise."""
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}'; known: {', '.join(METHODS)}")
    return METHODS[name]


def catalogue_settings(name: str) -> dict:
    """The paper's settings of ``name`` (search space, fixed options, training overrides): the catalogue layer
    under a config's own (``tunevlseg.config.effective_settings`` merges them, docs/how-to/configure.md: precedence)."""
    method = get_method(name)
    out: dict = {}
    if method.tuned:
        out["search"] = copy.deepcopy(dict(method.search))
    if method.fixed:
        out["fixed"] = copy.deepcopy(dict(method.fixed))
    if method.training:
        out["training"] = copy.deepcopy(dict(method.training))
    return out


__all__ = ["CATALOGUE", "DEPTH_KEY", "METHODS", "METHOD_ORDER", "Method", "OPTIMISER_KEYS", "catalogue_settings",
           "get_method"]
