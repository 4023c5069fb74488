"""Model presets, preprocessing (identical to CLIPImageProcessor, no torchvision)."""
