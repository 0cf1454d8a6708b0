"""Evaluation metrics: pure functions over generations, answers and log-probabilities."""
