"""Early-exit runtime: whole-model execution that stops a token at a confident exit head.

A layer of its own, between the modules it drives (``models/``, ``nn/``, the ``exit_gate`` ops) and the code that
measures or builds policies with it (``analysis/tokens.py``, ``recipes/exit_heads.py``, ``report/``):

- :class:`EarlyExitLM` / :func:`full_model_generate` (:mod:`.runtime`): generation that really skips blocks;
- :func:`policy_logits`, :func:`policy_tokens`, :func:`evaluate_exit_policy`, :func:`threshold_sweep`
  (:mod:`.policy`): the teacher-forced evaluation of the same policy, batched over windows.
"""

from .policy import (
    ExitEvalResult,
    PolicyTokens,
    evaluate_exit_policy,
    policy_logits,
    policy_tokens,
    threshold_sweep,
)
from .runtime import EarlyExitLM, GenerationResult, full_model_generate

__all__ = [
    "EarlyExitLM",
    "ExitEvalResult",
    "GenerationResult",
    "PolicyTokens",
    "evaluate_exit_policy",
    "full_model_generate",
    "policy_logits",
    "policy_tokens",
    "threshold_sweep",
]
