"""`python -m aelab.stacked [overrides] [stack=N]`: a sweep, its runs stacked; see
aelab.stacked.sweep."""

from aelab.stacked.sweep import cli

cli()
