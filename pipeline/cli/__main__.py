"""``python -m pipeline.cli``: the ``initstudy`` command line."""

from pipeline.cli import main

main()
