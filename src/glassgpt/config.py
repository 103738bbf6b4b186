"""Configuration: the model's shape (`GPTConfig`), the training recipe (`TrainConfig`),
the presets that ship with the package, TOML files and `key=value` overrides.

A preset or TOML file has two tables, `[model]` and `[train]`. Every key is
checked: an unknown key, a value of the wrong type or out of range raises
`UsageError` (a `ValueError`) with one sentence saying what to change.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from glassgpt.errors import UsageError, did_you_mean, first_line
from glassgpt.safe_read import read_text

PRESET_DIR = "presets"

MAX_TOML_BYTES = 1 << 20  # a config file is a few hundred bytes

# Upper bounds on sizes and counts (stated in docs/reliability.md): past these no run on one
# machine makes sense, and a typo would otherwise end in an allocator error or a hang.
# Within them, whether a model fits the memory is checked from its size (glassgpt.limits).
UPPER_BOUNDS = {
    "vocab_size": 2**24, "block_size": 2**17, "n_layer": 1024, "n_head": 1024, "n_embd": 2**16,
    "batch_size": 2**16, "grad_accum_steps": 2**16, "max_iters": 10**9, "eval_interval": 10**9,
    "eval_iters": 10**6, "log_interval": 10**9, "warmup_iters": 10**9, "lr_decay_iters": 10**9,
    "max_bad_steps": 10**6, "analysis_interval": 10**9, "seed": 2**63 - 1, "threads": 1024, "max_minutes": 10**7,
    "min_train_tokens": 2**62,
}


ANY = "any"  # `gpt2=ANY`: Hugging Face export takes any value of this field


def option(default, *, resume: bool = False, finetune: bool = False, gpt2=None, lacks: str = ""):
    """A config field and its rules, declared beside its default:
    `resume` / `finetune`: whether the field may differ when a run is resumed, or fine-tuned from
    another run (False, the default for a new field: the weights or the saved state depend on it);
    `gpt2`: the value GPT-2 needs for Hugging Face export (`ANY`: no constraint; None, the default
    for a new field: the field's own default), with `lacks` saying why, e.g. "GPT-2 has no qk_norm".
    `finetune.SHAPE_FIELDS`, the resume refusals and `hf.config_to_hf`'s refusals read these."""
    meta = {"resume": resume, "finetune": finetune, "gpt2": default if gpt2 is None else gpt2, "lacks": lacks}
    return field(default=default, metadata=meta)


def fixed_on(cls, when: str) -> tuple[str, ...]:
    """The fields of `cls` (GPTConfig or TrainConfig) that may not change on `when`, "resume" or
    "finetune", in declaration order. A field that declares nothing may not change."""
    if when not in ("resume", "finetune"):
        raise ValueError(f"when must be 'resume' or 'finetune', got {when!r}")
    return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get(when, False))


def changed(saved, new, names: typing.Iterable[str]) -> list[str]:
    """The names among `names` whose values differ between two configs of one class."""
    return [k for k in names if getattr(saved, k) != getattr(new, k)]


def show(value) -> str:
    """A value as it is written in a TOML file or a key=value override."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def gpt2_refusals(config: "GPTConfig") -> list[str]:
    """Why GPT-2 cannot hold this model: one clause per field that differs from what GPT-2
    needs (empty when it can be exported)."""
    reasons = []
    for f in dataclasses.fields(config):
        wanted, value = f.metadata.get("gpt2", f.default), getattr(config, f.name)
        if wanted != ANY and value != wanted:
            lacks = f.metadata.get("lacks") or f"GPT-2 needs {f.name}={show(wanted)}"
            reasons.append(f"{lacks} (this model has {f.name}={show(value)})")
    return reasons


@dataclass
class GPTConfig:
    """The model's shape. Each field says whether it may change on resume and fine-tuning
    (only those that leave the weights' shapes and meaning alone) and what GPT-2 needs."""

    vocab_size: int = option(50257, gpt2=ANY)
    block_size: int = option(1024, gpt2=ANY)
    n_layer: int = option(12, gpt2=ANY)
    n_head: int = option(12, gpt2=ANY)
    n_embd: int = option(768, gpt2=ANY)
    dropout: float = option(0.0, resume=True, finetune=True, gpt2=ANY)
    bias: bool = option(True, gpt2=ANY)  # exported without biases as zero biases: the same function
    pos_encoding: str = option("learned", lacks="GPT-2 has learned positions only")  # "learned" | "rope"
    rope_theta: float = option(10000.0, gpt2=ANY)  # read by RoPE alone
    norm: str = option("scratch", resume=True, finetune=True, gpt2=ANY)  # "scratch" | "torch": one function
    attn_impl: str = option("manual", resume=True, finetune=True, gpt2=ANY)  # "manual" | "sdpa": one function
    tie_weights: bool = option(True, gpt2=ANY)  # exported as tie_word_embeddings
    qk_norm: bool = option(False, lacks="GPT-2 has no qk_norm")  # RMS-normalise q and k per head before the dot product
    mlp_act: str = option("gelu", lacks="GPT-2 has no MLP activation but the tanh GELU")  # "gelu" | "relu2" (squared ReLU)
    logit_softcap: float = option(0.0, lacks="GPT-2 has no logit softcap")  # > 0: logits = cap * tanh(logits / cap); 0 is off
    zero_init_proj: bool = option(False, resume=True, finetune=True, gpt2=ANY)  # start every output projection at zero (init only)
    # "none" | "learned" (a per-head logit in the softmax) | "gate" (a sigmoid gate per head)
    attn_sink: str = option("none", lacks="GPT-2 has no attention-sink remedy")
    # no MLP blocks: attention heads alone (the toy models of Olsson et al. 2022)
    attn_only: bool = option(False, lacks="GPT-2 has an MLP in every block and so cannot hold an attention-only model")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        _check_types(self)
        _check_upper_bounds(self)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        _check_choice("pos_encoding", self.pos_encoding, ("learned", "rope"))
        _check_choice("norm", self.norm, ("scratch", "torch"))
        _check_choice("attn_impl", self.attn_impl, ("manual", "sdpa"))
        _check_choice("attn_sink", self.attn_sink, ("none", "learned", "gate"))
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_embd % self.n_head:
            raise UsageError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"pick n_head among {_divisors(self.n_embd)} or change n_embd"
            )
        if self.pos_encoding == "rope" and self.head_size % 2:
            raise UsageError(
                f"RoPE needs an even head size, but n_embd/n_head = {self.head_size}: "
                "change n_embd or n_head, or use pos_encoding=learned"
            )
        if self.rope_theta <= 0:
            raise UsageError(f"rope_theta must be positive, got {self.rope_theta}")
        _check_choice("mlp_act", self.mlp_act, ("gelu", "relu2"))
        if self.logit_softcap < 0:
            raise UsageError(f"logit_softcap must be 0 (off) or positive, got {self.logit_softcap}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str) -> "GPTConfig":
        """The model shape of a named preset, e.g. `GPTConfig.preset("gpt2")`."""
        return load_preset(name)[0]


@dataclass
class TrainConfig:
    """The training recipe. On resume every field but the optimizer (the saved moments are the
    optimizer's) and bos (the model has learned what its first token is) may change; a fine-tuning run
    starts a fresh recipe, so any may."""

    dataset: str = option("shakespeare-char", resume=True, finetune=True)
    batch_size: int = option(12, resume=True, finetune=True)
    grad_accum_steps: int = option(1, resume=True, finetune=True)
    max_iters: int = option(2000, resume=True, finetune=True)
    eval_interval: int = option(250, resume=True, finetune=True)
    eval_iters: int = option(20, resume=True, finetune=True)  # batches per periodic eval; the final eval reads the whole split
    log_interval: int = option(10, resume=True, finetune=True)
    learning_rate: float = option(1e-3, resume=True, finetune=True)
    min_lr: float = option(1e-4, resume=True, finetune=True)
    warmup_iters: int = option(100, resume=True, finetune=True)
    lr_decay_iters: int = option(0, resume=True, finetune=True)  # 0 means max_iters
    weight_decay: float = option(0.1, resume=True, finetune=True)
    beta1: float = option(0.9, resume=True, finetune=True)
    beta2: float = option(0.99, resume=True, finetune=True)
    grad_clip: float = option(1.0, resume=True, finetune=True)  # 0 disables clipping
    dtype: str = option("float32", resume=True, finetune=True)  # "float32" | "bfloat16" | "float16"
    compile: bool = option(False, resume=True, finetune=True)
    device: str = option("auto", resume=True, finetune=True)  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    seed: int = option(1337, resume=True, finetune=True)
    max_bad_steps: int = option(10, resume=True, finetune=True)  # stop after this many non-finite steps in a row
    tensorboard: bool = option(False, resume=True, finetune=True)  # also log to RUN_DIR/tensorboard (needs the tensorboard package)
    # a run directory to start from (fine-tuning): its weights, shape and tokenizer; a resumed run keeps its own
    init_from: str = option("", resume=True, finetune=True)
    # "adamw" | "muon": Muon (torch.optim.Muon's update, in the precision the device is fast in) for the blocks' 2-D weights, AdamW for the rest
    optimizer: str = option("adamw", finetune=True)
    # every this many steps, an "analysis" row in metrics.jsonl and dynamics.png; 0 = off
    analysis_interval: int = option(0, resume=True, finetune=True)
    # the fraction of training windows that start with a span of their text, of random length, twice (in-context
    # repetition: grows induction heads sooner, Zucchet et al. 2025); evaluation and analysis read the text as it is
    repeat_fraction: float = option(0.0, resume=True, finetune=True)
    # start every training, evaluation and analysis window with the tokenizer's end-of-text token (char and byte:
    # a newline), as GPT-2's documents start with <|endoftext|>: one key every query sees, the same in every window
    bos: bool = option(False, finetune=True)
    # refuse a dataset whose training split holds fewer tokens: a recipe's floor, below which its model
    # learns the text by heart instead of growing what the recipe grows; 0 = no floor
    min_train_tokens: int = option(0, resume=True, finetune=True)
    # under torchrun: "ddp" (a whole copy per rank) | "fsdp" (weights, gradients and AdamW state sharded,
    # sharded checkpoints); fixed on resume, since the saved optimizer state has the mode's format
    parallel: str = option("ddp", finetune=True)
    # keep only each block's input for the backward pass and recompute the rest: less memory, more compute
    activation_checkpointing: bool = option(False, resume=True, finetune=True)
    # torch's CPU threads: 0 or "auto" counts the cores free of other work, says so in the log and
    # counts again while training (glassgpt.threads); a number fixes them
    threads: int = option(0, resume=True, finetune=True)
    # end within this many minutes (fractions too), final evaluation and checkpoint included, with the
    # learning-rate schedule compressed to the time (glassgpt.training.budget); 0 = no time limit
    max_minutes: float = option(0.0, resume=True, finetune=True)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if isinstance(self.threads, str) and self.threads.strip().lower() == "auto":
            self.threads = 0
        _check_types(self)
        _check_upper_bounds(self)
        if self.seed < 0:
            raise UsageError(f"seed must not be negative, got {self.seed}")
        for name in ("batch_size", "grad_accum_steps", "max_iters", "eval_interval",
                     "eval_iters", "log_interval", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_iters", "lr_decay_iters", "weight_decay", "grad_clip", "min_lr"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0.0 <= self.repeat_fraction <= 1.0:
            raise UsageError(f"repeat_fraction must be between 0 (plain text) and 1 (every window repeated), "
                             f"got {self.repeat_fraction}")
        if self.min_train_tokens < 0:
            raise UsageError(f"min_train_tokens must be 0 (no floor) or a number of tokens, got {self.min_train_tokens}")
        if self.analysis_interval < 0:
            raise UsageError(f"analysis_interval must be 0 (off) or a number of steps, got {self.analysis_interval}")
        if self.threads < 0:
            raise UsageError(f"threads must be 0 or auto (count the free cores) or a number of threads, got {self.threads}")
        if self.max_minutes < 0:
            raise UsageError(f"max_minutes must be 0 (no time limit) or a number of minutes, got {self.max_minutes}")
        if self.learning_rate <= 0:
            raise UsageError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.min_lr > self.learning_rate:
            raise UsageError(f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        _check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        _check_choice("optimizer", self.optimizer, ("adamw", "muon"))
        if self.optimizer == "muon" and self.dtype == "float16":
            raise UsageError("optimizer=muon cannot run with the float16 gradient scaler: use dtype=bfloat16 or float32")
        _check_choice("parallel", self.parallel, ("ddp", "fsdp"))
        if self.parallel == "fsdp" and self.optimizer == "muon":  # Muon orthogonalises whole matrices
            raise UsageError("optimizer=muon needs each weight matrix whole, and parallel=fsdp splits them across "
                             "ranks: use optimizer=adamw with parallel=fsdp, or parallel=ddp with muon")
        if self.parallel == "fsdp" and self.dtype == "float16":
            raise UsageError("parallel=fsdp runs with dtype=bfloat16 or float32, not float16's gradient scaler")
        check_device_name(self.device)

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters


@dataclass
class RunConfig:
    """Everything a run is made of: the model shape and the training recipe."""

    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # The [model] keys a file or an override set; None: all of them (a config built in Python).
    # With init_from, the others come from the source run.
    given_model_keys: frozenset | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "RunConfig":
        _reject_unknown(d, {"model", "train"}, f"{source}: table")
        model = _build(GPTConfig, d.get("model", {}), f"{source} [model]")
        train = _build(TrainConfig, d.get("train", {}), f"{source} [train]")
        return cls(model, train, frozenset(d.get("model", {})))


# ---------------------------------------------------------------- presets and files

def preset_names() -> list[str]:
    files = resources.files("glassgpt").joinpath(PRESET_DIR).iterdir()
    return sorted(f.name[: -len(".toml")] for f in files if f.name.endswith(".toml"))


def load_preset(name: str) -> tuple[GPTConfig, TrainConfig]:
    rc = preset_run_config(name)
    return rc.model, rc.train


def preset_run_config(name: str) -> RunConfig:
    """A named preset as a RunConfig (which remembers the [model] keys it sets)."""
    if name not in preset_names():
        hint = did_you_mean(name, preset_names())
        raise UsageError(f"unknown preset {name!r}{hint}; known presets: {', '.join(preset_names())}")
    text = resources.files("glassgpt").joinpath(PRESET_DIR, f"{name}.toml").read_text()
    return RunConfig.from_dict(tomllib.loads(text), source=f"preset {name}")


def load_run_config(preset_or_toml: str, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """A preset name or a path to a TOML file, then `key=value` overrides applied in order."""
    if preset_or_toml.endswith(".toml") or Path(preset_or_toml).is_file():
        path = Path(preset_or_toml)
        if not (path.exists() or path.is_symlink()):
            raise UsageError(f"config file {path} does not exist")
        text = read_text(path, MAX_TOML_BYTES, error=UsageError)
        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, ValueError) as e:  # ValueError: an integer of thousands of digits
            raise UsageError(f"{path} is not valid TOML: {first_line(e)}") from None
        except RecursionError:
            raise UsageError(f"{path} nests its values too deeply to be a glassgpt config") from None
        base = RunConfig.from_dict(data, source=str(path))
    else:
        base = preset_run_config(preset_or_toml)
    return apply_overrides(base, overrides)


def apply_overrides(rc: RunConfig, overrides: typing.Sequence[str]) -> RunConfig:
    model, train = dataclasses.asdict(rc.model), dataclasses.asdict(rc.train)
    given = set(model if rc.given_model_keys is None else rc.given_model_keys)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"override {item!r} must look like key=value, e.g. max_iters=100")
        if key in model:
            model[key] = parse_value(raw)
            given.add(key)
        elif key in train:
            train[key] = parse_value(raw)
        else:
            hint = did_you_mean(key, list(model) + list(train))
            raise UsageError(f"unknown config key {key!r}{hint}")
    return RunConfig(_build(GPTConfig, model, "override"), _build(TrainConfig, train, "override"), frozenset(given))


def parse_value(raw: str):
    """A TOML value (`3`, `1e-3`, `true`, `"x"`), or the bare text as a string."""
    raw = raw.strip()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    except RecursionError:
        raise UsageError(f"the value {raw[:40]}... nests too deeply to be a glassgpt setting") from None


# ---------------------------------------------------------------- checking helpers

def _build(cls, values: dict, source: str):
    names = {f.name for f in dataclasses.fields(cls)}
    _reject_unknown(values, names, f"{source}: key")
    return cls(**values)


def _reject_unknown(values: dict, known: set, what: str) -> None:
    if not isinstance(values, dict):
        raise UsageError(f"{what.split(':')[0]} must be a table of key = value pairs")
    for key in values:
        if key not in known:
            raise UsageError(f"{what} {key!r} is unknown{did_you_mean(key, sorted(known))}")


def _check_upper_bounds(obj) -> None:
    for f in dataclasses.fields(obj):
        limit = UPPER_BOUNDS.get(f.name)
        if limit is not None and getattr(obj, f.name) > limit:
            raise UsageError(f"{f.name} is capped at {limit:,}, got {getattr(obj, f.name):,}")


def _check_types(obj) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, want = getattr(obj, f.name), hints[f.name]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(obj, f.name, float(value))
            continue
        if want is bool and not isinstance(value, bool):
            raise UsageError(f"{f.name} must be true or false, got {value!r}")
        if want is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{f.name} must be a whole number, got {value!r}")
        if want is float and not isinstance(value, float):
            raise UsageError(f"{f.name} must be a number, got {value!r}")
        if want is str and not isinstance(value, str):
            raise UsageError(f"{f.name} must be a string, got {value!r}")
        if want is float and not math.isfinite(value):
            raise UsageError(f"{f.name} must be a finite number, got {value}")


def check_device_name(name: str) -> None:
    """auto, cpu, cuda, cuda:N or mps; anything else is a usage error."""
    if not (isinstance(name, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name)):
        raise UsageError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")


def _check_choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0]
