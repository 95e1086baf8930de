"""Model recipes: one file per model family, listed in registry.py. Needs torch and transformers."""
