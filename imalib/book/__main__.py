"""``python -m imalib.book``: execute the chapters into ``book/generated/`` (see :mod:`imalib.book.execute`)."""

from imalib.book.execute import main

raise SystemExit(main())
