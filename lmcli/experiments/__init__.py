"""Experiments over training runs: what run directories say (runs), learning curves (plot),
hyperparameter grids (sweep) and held-out evaluation of a checkpoint (evaluate)."""
