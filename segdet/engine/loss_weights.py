"""train.loss_weights: the factor of each loss term in the total that the optimizer minimises."""
from __future__ import annotations

import math
from collections.abc import Mapping


class LossWeights:
    """``{loss name: weight >= 0}``; terms not named weigh 1. Names are checked against the model's loss dict at
    the first :meth:`total` call, the earliest point where the model has said which terms it returns."""

    def __init__(self, weights: Mapping[str, float] | None = None):
        self.weights = {}
        for name, w in dict(weights or {}).items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"train.loss_weights.{name} must be a finite number >= 0, got {w!r}")
            self.weights[str(name)] = float(w)
        self._checked = False

    def total(self, losses: Mapping):
        """Weighted sum of ``losses`` (floats or scalar tensors) over the sorted names. A weight of 1 is not
        multiplied in, so the default weights leave every bit of the sum as the plain sum has it."""
        names = sorted(losses)
        if not self._checked:
            unknown = sorted(set(self.weights) - set(names))
            if unknown:
                raise ValueError(f"train.loss_weights names {unknown}, which the model does not return; its loss "
                                 f"terms are {names}")
            self._checked = True
        weights = [self.weights.get(k, 1.0) for k in names]
        return sum(losses[k] if w == 1.0 else w * losses[k] for k, w in zip(names, weights))
