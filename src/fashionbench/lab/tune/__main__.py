"""`python -m fashionbench.lab.tune <run>`: the same as `fashionbench tune <run>`."""
import sys

from fashionbench.lab.tune.session import main

sys.exit(main())
