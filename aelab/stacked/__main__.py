"""`python -m aelab.stacked [overrides] [stack=N]`: a sweep, its runs stacked; see
aelab.stacked.sweep."""

from aelab.stacked.sweep import cli

if __name__ == "__main__":
    cli()
