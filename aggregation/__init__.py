"""crowdqc's aggregation engine: pure numpy/scipy, integer-coded arrays in and out.

Nothing here imports Flask, Redis, RQ or marshmallow.  Start with :func:`encode` to turn
(task, worker, label) strings into :class:`Answers`, then fit an estimator.
"""

from .encoding import DUPLICATE_POLICIES, Answers, AnswersError, decode, encode, encode_gold, from_codes
from .majority_vote import MajorityVote
from .wawa import Wawa

__all__ = [
    "DUPLICATE_POLICIES",
    "Answers",
    "AnswersError",
    "MajorityVote",
    "Wawa",
    "decode",
    "encode",
    "encode_gold",
    "from_codes",
]
