"""Calibration data and precision: real inputs (split from the evaluation set), FP16 and INT8 graphs."""
