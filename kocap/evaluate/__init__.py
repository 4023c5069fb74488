"""Korean caption evaluation: morpheme tokens, n-gram metrics, baselines, diversity, grounding."""
