"""The report stage's library: plots/report.md, plots/summary.csv and the figures, built from the
runs' results, the studies' and the tuning sessions', beside the numbers the five write-ups report.
"""



