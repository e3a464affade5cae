"""Experiments over training runs: the runs table (runs), learning curves (plot, terminal_plot),
hyperparameter grids (sweep) and held-out evaluation of a checkpoint (evaluate)."""
