"""crowdqc's aggregation engine: pure numpy/scipy, integer-coded arrays in and out.

Nothing here imports Flask, Redis, RQ or marshmallow.  Start with :func:`encode` to turn
(task, worker, label) strings into :class:`Answers`, then fit an estimator.
"""

from .agreement import AgreementResult, agreement_statistics, cohen_kappa, fleiss_kappa, krippendorff_alpha, percent_agreement
from .dawid_skene import DawidSkene
from .encoding import DUPLICATE_POLICIES, Answers, AnswersError, decode, encode, encode_gold, from_codes
from .disagreements import Disagreements
from .glad import GLAD
from .majority_vote import MajorityVote
from .one_coin import OneCoinDawidSkene
from .reliability import FLAGS as RELIABILITY_FLAGS, WorkerReliability, wilson_interval
from .wawa import Wawa

__all__ = [
    "AgreementResult",
    "agreement_statistics",
    "cohen_kappa",
    "fleiss_kappa",
    "krippendorff_alpha",
    "percent_agreement",
    "DUPLICATE_POLICIES",
    "Answers",
    "AnswersError",
    "DawidSkene",
    "Disagreements",
    "GLAD",
    "MajorityVote",
    "OneCoinDawidSkene",
    "RELIABILITY_FLAGS",
    "Wawa",
    "WorkerReliability",
    "decode",
    "encode",
    "encode_gold",
    "from_codes",
    "wilson_interval",
]
