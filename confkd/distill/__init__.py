"""Distillation objectives: loss functions by name and teacher-student layer mapping."""
