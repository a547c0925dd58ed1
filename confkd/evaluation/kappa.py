"""The phi_cnf threshold kappa under each policy of ``evaluate.kappa`` (pure: arrays in, a number out).

* ``reference``: the teacher's own retraining noise. ``kappa = sigma(teacher, reference teacher)`` on the
  same split, measure and subset, the reference teacher being fine-tuned with the same recipe and another
  seed. phi_cnf then reads: the student's confidence departs from the teacher's no more than retraining
  the teacher would (the prediction-churn yardstick of production retraining).
* ``fixed``: a number given by the user.
* ``bound``: the paper's ``gamma * sqrt(beta / (|X| (1 - alpha)))`` (:func:`confidence.kappa_bound`; our
  reading of the paper), with beta and |X| from params or, when null, the student's own final training
  KL summed over the train sample. With beta = summed KL and gamma = 1 this kappa is sqrt(2) times the
  Pinsker bound: it cannot fail, and the evaluation says so.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from confkd.errors import DataError, ParamsError
from confkd.evaluation.confidence import ConfidenceSpec, kappa_bound, sigma_from_logits

POLICIES: tuple[str, ...] = ("reference", "fixed", "bound")


def resolve_kappa(policy: str, spec: ConfidenceSpec, *, teacher_logits: Optional[np.ndarray] = None,
                  reference_logits: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None,
                  value: Optional[float] = None, beta: Optional[float] = None, n: Optional[int] = None,
                  gamma: float = 1.0, alpha: float = 0.0, measured_beta_sum: Optional[float] = None,
                  measured_n: Optional[int] = None) -> float:
    """kappa for one split.

    ``reference`` needs ``teacher_logits``, ``reference_logits`` ``[N, K]`` and ``labels`` ``[N]`` of the
    split; ``fixed`` needs ``value``; ``bound`` uses ``beta``/``n`` when given, else ``measured_beta_sum``
    (the summed final training KL) and ``measured_n`` (its sample size).
    """
    if policy == "reference":
        if teacher_logits is None or reference_logits is None:
            raise DataError("kappa policy 'reference' needs the reference teacher's logits")
        return sigma_from_logits(teacher_logits, reference_logits, labels, spec)
    if policy == "fixed":
        if value is None:
            raise ParamsError("kappa policy 'fixed' needs a value")
        return float(value)
    if policy == "bound":
        beta_sum = beta if beta is not None else measured_beta_sum
        size = n if n is not None else measured_n
        if beta_sum is None or size is None:
            raise DataError("kappa policy 'bound' needs beta and n (in params, or measured by the distill stage)")
        return kappa_bound(beta_sum, int(size), gamma, alpha)
    raise ParamsError(f"unknown kappa policy {policy!r} (available: {POLICIES})")


def implied_by_maths(kappa: float, pinsker_bound: float) -> bool:
    """True when ``kappa >= pinsker_bound``: then ``sigma <= pinsker_bound <= kappa`` for ANY student with
    this KL, so phi_cnf holding says nothing about confidence preservation."""
    return bool(kappa >= pinsker_bound)

