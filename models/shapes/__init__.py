"""Tiny CLIP, CLIPSeg and Florence-2 trained on the procedural shapes dataset (calibration/shapes.py).

Real transformers classes at toy sizes, trained for minutes on a CPU, so accuracy gates measure
accuracy: zero-shot top-1, referring-mask IoU, caption exact match and detection mAP against ground
truth. `python -m trtdeploy.models.shapes train|eval ...` (or `make tiny-models`) retrains and
evaluates them; the results live in models/weights/<name>/ with a CARD.md.
"""
