"""profile(): a model's per-module, per-row and per-column NTK on a probe sample, and the
profile folder it is saved in (``folder``); ``capture`` re-runs its passes for recommend."""
