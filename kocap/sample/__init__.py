"""The embedded AI-Hub-shaped sample dataset: rendered clips with Korean descriptions."""
