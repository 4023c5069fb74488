"""Training: assembly (base checkpoint), frozen-tower feature cache, stage 1 (align), stage 2 (QLoRA)."""
