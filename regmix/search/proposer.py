"""The interface every mixture-search method implements, and what it shares.

A proposer is driven the same way by the search driver (`regmix.study.search_run`), the offline benchmark
and a plain Python loop:

    proposer = make_proposer("bo", space, objective, seed=0)
    for _ in range(rounds):
        mixtures = proposer.ask(8)
        proposer.tell(mixtures, [train_and_evaluate(m) for m in mixtures])  # {valid domain: loss}
    best = proposer.recommend()

`tell` takes per-domain validation losses, which the proposer reduces with the shared `Objective`,
and the mixtures the runs achieved (not only the ones asked for). The study runner
(`regmix.study.runner`) asks through `requests(n)`: runs that may carry a name of their own (a run
shared by the methods of a study), an online `schedule:` policy, a kept checkpoint; it tells through
`tell_results` with the finished runs. A proposer is `done` when it has nothing more to ask
(the online methods' fixed sequences); the others run until the runner's budget. `state_dict()` is plain JSON data
(observations, random state, method state): `load_state_dict` on a fresh proposer of the same
settings continues exactly, the next `ask` included.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.results import RunResult
from regmix.core.space import SearchSpace


@dataclass(frozen=True)
class Recommendation:
    """The mixture to hand to the large run, its predicted objective and that prediction's uncertainty."""

    mixture: Mixture
    predicted: float
    uncertainty: float | None
    basis: str  # how it was chosen, for the report
    details: Mapping[str, Any] = field(default_factory=dict)  # what else the report shows (JSON data)


@dataclass(frozen=True)
class RunRequest:
    """One run a proposer asks for. `name`: a run shared by methods, named by its content (`stratified`);
    None: the runner numbers it. `policy`: an online schedule; `valid`: its validation domains (None: all)."""

    mixture: Mixture
    name: str | None = None
    policy: Mapping[str, Any] | None = None
    keep_checkpoint: bool = False
    valid: tuple[str, ...] | None = None


class Proposer(ABC):
    """ask(n) -> n mixtures; tell(mixtures, losses); recommend(); state_dict() / load_state_dict()."""

    name: ClassVar[str]
    batch_all: ClassVar[bool] = False  # asks its whole budget at once (RegMix's one sweep)
    uses_anchors: ClassVar[bool] = True  # the study's anchor runs (natural, uniform) are told to it

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0):
        self.space, self.objective, self.seed = space, objective, seed
        self.rng = np.random.default_rng(seed)
        self.mixtures = np.empty((0, space.dim))  # observed (achieved) mixtures, space.domains order
        self.losses: list[dict[str, float]] = []

    @property
    def values(self) -> np.ndarray:
        """Objective value of every observation, in the order told."""
        return np.array([self.objective.value(losses) for losses in self.losses])

    def __len__(self) -> int:
        return len(self.losses)

    @abstractmethod
    def ask(self, n: int) -> list[Mixture]:
        """`n` new mixtures to train, each inside the space."""

    def tell(self, mixtures: Sequence[Mixture], losses: Sequence[Mapping[str, float]]) -> None:
        """Observations: the mixtures trained (achieved ones where known) and their valid-domain losses."""
        if len(mixtures) != len(losses):
            raise ValueError(f"{len(mixtures)} mixtures but {len(losses)} loss records")
        rows = self.space.vectors(mixtures)
        values = [self.objective.value(record) for record in losses]
        if not np.isfinite(values).all():
            raise ValueError("objective values must be finite: leave failed runs out of tell()")
        self.mixtures = np.vstack([self.mixtures, rows])
        self.losses += [{d: float(v) for d, v in record.items()} for record in losses]

    def requests(self, n: int) -> list[RunRequest]:
        """The next runs, as the runner asks: `ask(n)`'s mixtures, numbered by the runner."""
        return [RunRequest(m) for m in self.ask(n)]

    def tell_results(self, names: Sequence[str], results: Sequence[RunResult]) -> None:
        """Finished runs (`names`: the runs' names in the study), told as their achieved mixtures and the losses
        methods may measure (the probe part, never the held-out part the runs are scored on)."""
        self.tell([r.mixture for r in results], [r.measured_losses for r in results])

    @property
    def done(self) -> bool:
        """Nothing more to ask: the runner stops before its budget (the online methods' fixed sequences)."""
        return False

    @abstractmethod
    def recommend(self) -> Recommendation:
        """The mixture to train at scale, from the observations so far."""

    def inside(self) -> np.ndarray:
        """Which observations lie in the space (runs started from may not: an achieved mixture, new bounds)."""
        inside = self.space.contains(self.mixtures, atol=1e-4)
        return inside if inside.any() else np.ones(len(self), dtype=bool)

    def best_observed(self) -> Recommendation:
        """The observation inside the space with the lowest objective (what plain random search hands over)."""
        if not len(self):
            raise ValueError("nothing observed yet: tell() some runs first")
        best = int(np.argmin(np.where(self.inside(), self.values, np.inf)))
        return Recommendation(self.space.mixture(self.mixtures[best]), float(self.values[best]), None,
                              "best observed run")

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name, "seed": self.seed, "rng": self.rng.bit_generator.state,
                "domains": list(self.space.domains), "mixtures": self.mixtures.tolist(), "losses": self.losses}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("method") != self.name:
            raise ValueError(f"state of method {state.get('method')!r}, not {self.name!r}")
        if list(state["domains"]) != list(self.space.domains):
            raise ValueError(f"state over domains {state['domains']}, the space has {list(self.space.domains)}")
        self.seed = int(state["seed"])
        self.rng.bit_generator.state = state["rng"]
        self.mixtures = np.array(state["mixtures"], dtype=np.float64).reshape(-1, self.space.dim)
        self.losses = [dict(record) for record in state["losses"]]

    def torch_seed(self) -> int:
        """A seed for torch drawn from this proposer's random state, so a restored proposer repeats its asks."""
        return int(self.rng.integers(0, 2**31 - 1))
