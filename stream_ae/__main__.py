"""`python -m stream_ae ...`: the same as the `stream-ae` console script."""

from stream_ae.cli import main

main()
