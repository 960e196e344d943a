"""`python -m fashionbench.tracking`: print the MLflow UI link (what `make repro` prints last)."""
import sys

from fashionbench.tracking.ui import main

sys.exit(main())
