"""The book wing: the analyses, tables, figures and glue behind the chapters in ``notebooks/``.

``glue`` puts values into the text, ``plots`` draws every figure (one colour and marker per method),
``chapter`` builds the image chapters' table sections, ``moons`` holds the Moons chapter's analyses
(pure functions of runs, with one explicit cache), ``equilibrium`` the checks of section 2.3, and
``execute`` runs the chapters into ``book/generated/`` (``python -m imalib.book``).
"""
