"""One module per dvc.yaml stage: validate, download, preprocess, train, evaluate, report.
Each parses its arguments, calls the library (and tracking), and writes its outputs; none
imports another.
"""



