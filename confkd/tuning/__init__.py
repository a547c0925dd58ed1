"""Confidence-guided hyperparameter tuning with Optuna."""
