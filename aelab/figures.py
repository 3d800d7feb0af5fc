"""`python -m aelab.figures STUDY_DIR`: one panel per run; see aelab.analysis.figures."""

import sys

from aelab.analysis.figures import main

if __name__ == "__main__":
    sys.exit(main())
