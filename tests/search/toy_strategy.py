"""A fourth search strategy, as a contributor would write one: this module and one
`register_strategy` call (made by the `toy_strategy` fixture, so that it is registered only for the
tests that ask for it). It evaluates random modes; the session records them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from subnetsearch.search import Outcome, SearchSession, SearchStrategy, StrategyOptions


@dataclass(frozen=True)
class RandomOptions(StrategyOptions):
    trials: int = 4
    seed: int = 0


class RandomModes(SearchStrategy):
    name = "random-modes"
    summary = "uniformly random modes (a toy strategy of the test suite)"
    Options = RandomOptions

    def run(self, session: SearchSession, options, say=print, name=None) -> Outcome:
        generator = torch.Generator().manual_seed(options.seed)
        modes = [session.supernet.random_mode(generator) for _ in range(options.trials)]
        with session.search(self.name, options.settings(), options.objectives, name) as search:
            results = search.evaluate(modes)
        say(f"evaluated {len(results)} random modes")
        return Outcome(search.study, search.fresh)
