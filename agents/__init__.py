"""Agents: non-learning baselines (and, later, Seq2Seq and CMA), and the evaluation runner."""
