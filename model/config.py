"""How to decode, as data: the sampler, one `DecodeConfig`, and the registry of decoding methods.

    Sampler       temperature, top-k, top-p (temperature 0 is greedy)
    METHODS       method id -> MethodSpec: its label on the page, one line on what it does, and which
                  settings it reads (an order and group size, a strategy, k tokens per step, the base model)
    DecodeConfig  method + order or strategy + group size or k + sampler + seed (+ what each step
                  records): validated on creation, JSON round trip, stored in every trace

`DecodeConfig` is the one thing the page, branching, the evaluation and the benchmarks pass to
`model.decoding.decode`; which keyword arguments a decoder takes is decided here and nowhere else.
Traces written before the config existed carry a mode and a settings dict: `DecodeConfig.from_trace_dict`
reads those too.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, replace

from model.plans import ORDERS

STRATEGIES = ("confidence", "entropy", "random")


@dataclass(frozen=True)
class Sampler:
    """Temperature 0 is greedy (seed-independent); top_k 0 and top_p 1 switch those filters off.
    no_repeat n (0: off): no token next to itself, no token n-gram twice nearby (model.repeats)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    no_repeat: int = 0

    def __post_init__(self):
        if not isinstance(self.temperature, (int, float)) or math.isnan(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy); got {self.temperature!r}.")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off); got {self.top_k!r}.")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off); got {self.top_p!r}.")
        if (not isinstance(self.no_repeat, int) or isinstance(self.no_repeat, bool) or self.no_repeat < 0
                or self.no_repeat == 1):
            raise ValueError(f"no_repeat must be 0 (off) or an n-gram size of at least 2; got {self.no_repeat!r}.")

    def to_dict(self) -> dict:
        """Its fields; no_repeat only when on (so the configs and traces written before it read the same)."""
        d = asdict(self)
        if not self.no_repeat:
            d.pop("no_repeat")
        return d


@dataclass(frozen=True)
class MethodSpec:
    """One decoding method: what the page calls it, what it does, and which settings it reads."""

    name: str  # the id in traces and in DecodeConfig.method
    label: str  # the page's name for it
    description: str  # one line for the method list
    order: bool = False  # reads order + group_size (plan decoding)
    strategy: bool = False  # reads strategy (how open positions are ranked)
    k: bool = False  # reads k (tokens committed per step)
    needs_base: bool = False  # runs the base AR model instead of the A3 model
    preview: bool = False  # can compute candidates for every open position at each step (preview_open)
    branchable: bool = False  # model.branching can resume it from any step (it keeps a content cache)
    compared: bool = True  # one of the page's Compare runs (the official variant: diffusion's with a joint layout)


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("plan", "A3 plan", "The paper's Algorithm 1: the open positions in groups, in an order you choose; "
               "each group sees every earlier one (cached).", order=True, preview=True, branchable=True),
    MethodSpec("dynamic", "A3 dynamic", "Algorithm 2: each step ranks every open position and commits the best k, "
               "which become the next group (cached).", strategy=True, k=True, branchable=True),
    MethodSpec("official_dynamic", "official dynamic", "The official code's variant: everything committed is one "
               "bidirectional group, recomputed every step.", strategy=True, k=True, compared=False),
    MethodSpec("diffusion", "diffusion", "Masked diffusion with the same model: every step predicts every blank from "
               "all known tokens and reveals the k best.", strategy=True, k=True),
    MethodSpec("one_step_parallel", "one-step parallel", "Every blank predicted from the given tokens only; what is "
               "revealed is never fed back (k per step).", k=True),
    MethodSpec("ar_baseline", "AR baseline", "The base model left to right, from the text before each blank only.",
               needs_base=True),
)}
LABELS = {spec.label: name for name, spec in METHODS.items()}


def method_spec(method: str) -> MethodSpec:
    """The spec of a method, by id ("plan") or by its page label ("A3 plan")."""
    name = LABELS.get(method, method)
    if name not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(LABELS)}.")
    return METHODS[name]


def _positive_int(value, what: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer; got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class DecodeConfig:
    """How one blank is decoded. Fields a method does not read keep their defaults and are ignored.

    method: an id of METHODS (a page label is accepted and stored as the id). order / group_size: the
    order plan decoding's plan was made in (model.plans.ORDERS) and its group size; "custom" (the
    default) says the plan's group ids came from the caller as they are. strategy / k: how the dynamic
    decoders rank open positions and how many they commit per step. sampler / seed: how tokens are
    drawn (greedy at temperature 0). top_k_candidates: candidates kept per open position in each step
    record. preview_open: plan decoding also scores every other
    open position at each step (candidates for all; costs a wider forward; the page and the evaluation
    turn it off and preview a step's other candidates on demand).
    """

    method: str = "plan"
    order: str = "custom"
    group_size: int = 1
    strategy: str = "confidence"
    k: int = 1
    sampler: Sampler = field(default_factory=Sampler)
    seed: int | None = 0
    top_k_candidates: int = 5
    preview_open: bool = True

    def __post_init__(self):
        object.__setattr__(self, "method", method_spec(self.method).name)
        if self.order not in (*ORDERS, "custom"):
            raise ValueError(f"Unknown order {self.order!r}; choose one of {', '.join((*ORDERS, 'custom'))}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        object.__setattr__(self, "group_size", _positive_int(self.group_size, "group_size"))
        object.__setattr__(self, "k", _positive_int(self.k, "k (tokens per step)"))
        if self.seed is not None:  # None: the caller passed its own torch.Generator
            if not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool):
                raise ValueError(f"seed must be an integer; got {self.seed!r}.")
            object.__setattr__(self, "seed", int(self.seed))
        if not isinstance(self.top_k_candidates, numbers.Integral) or self.top_k_candidates < 0:
            raise ValueError(f"top_k_candidates must be an integer >= 0; got {self.top_k_candidates!r}.")
        if isinstance(self.sampler, dict):
            object.__setattr__(self, "sampler", Sampler(**self.sampler))
        if not isinstance(self.sampler, Sampler):
            raise ValueError(f"sampler must be a model.config.Sampler; got {type(self.sampler).__name__}.")

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    @property
    def label(self) -> str:
        return self.spec.label

    def replace(self, **changes) -> DecodeConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def with_no_repeat(self, n: int) -> DecodeConfig:
        """A copy whose sampler holds the no-repeat rule `n` (model.repeats; 0: off)."""
        return self.replace(sampler=replace(self.sampler, no_repeat=n))

    def decoder_kwargs(self) -> dict:
        """The keyword arguments this method's decoder takes, from this config (model.decoding.decode)."""
        spec = self.spec
        kwargs = {"sampler": self.sampler, "seed": self.seed, "top_k_candidates": self.top_k_candidates}
        if spec.strategy:
            kwargs["strategy"] = self.strategy
        if spec.k:
            kwargs["k"] = self.k
        if spec.preview:
            kwargs["preview_open"] = self.preview_open
        return kwargs

    def to_dict(self) -> dict:
        return {**asdict(self), "sampler": self.sampler.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> DecodeConfig:
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown decode config fields {sorted(unknown)}.")
        return cls(**{**d, "sampler": Sampler(**d["sampler"]) if "sampler" in d else Sampler()})

    @classmethod
    def from_trace_dict(cls, d: dict) -> DecodeConfig:
        """The config of an exported trace: its "config", or, for traces exported before configs existed,
        what its mode and settings say."""
        if d.get("config"):
            return cls.from_dict(d["config"])
        s = d.get("settings") or {}
        sampler = Sampler(s.get("temperature", 0.0), s.get("top_k", 0), s.get("top_p", 1.0))
        return cls(method=d.get("mode", "plan"), strategy=s.get("strategy", "confidence"), k=int(s.get("k", 1)),
                   sampler=sampler, seed=s.get("seed", 0), top_k_candidates=int(s.get("top_k_candidates", 5)),
                   preview_open=bool(s.get("preview_open", d.get("mode") == "plan")))
