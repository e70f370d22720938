"""recommend(): a budget placed from a profile (search, allocation, baselines, evidence),
written as a Recipe."""
