"""Compatibility module (to be removed once tools/ and the notebooks import from the new homes).

The generic checks moved to :mod:`imalib.checks`; the method-parameter spec to :mod:`imalib.methods`.
"""

from imalib.checks import NOTEBOOK_SPEC, check_notebook_params, describe
from imalib.methods import check_method_params, method_param_spec

__all__ = ["NOTEBOOK_SPEC", "check_method_params", "check_notebook_params", "describe", "method_param_spec"]
