"""Experiment tools on top of the pipeline: studies (grids of DVC experiments or Ray tasks),
tuning on Ray, and `compare`.
"""



