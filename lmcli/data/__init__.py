"""Data sources: the embedded synthetic demo corpus and downloads of the CS336 datasets."""
