"""``python -m imalib``: the same command line as the ``imalib`` script."""

from imalib.cli import main

raise SystemExit(main())
