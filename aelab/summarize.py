"""`python -m aelab.summarize SWEEP_DIR`: one table (and plots) for a sweep; see
aelab.analysis.summarize."""

import sys

from aelab.analysis.summarize import main

if __name__ == "__main__":
    sys.exit(main())
