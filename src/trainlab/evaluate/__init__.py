"""Evaluation: metrics, reports and plots (matplotlib is imported only here)."""
