"""Classification, calibration and confidence-preservation metrics."""
