"""Evaluation: per-task metrics (:mod:`.metrics`), baselines (:mod:`.baselines`), comparisons of
routers and baselines (:mod:`.compare`), and quality against cost (:mod:`.cost_curve`, :mod:`.cost_sweep`).
"""
