"""Policies: PPO training, baselines, evaluation, artifacts."""
