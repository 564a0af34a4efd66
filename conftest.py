"""Repository-wide pytest setup: docstring examples run as doctests, Markdown fences and all.

Docstrings here follow transformers' style and wrap examples in ```python fences. Plain
doctest would read the closing fence as expected output, so the example regex stops the
expected output at a fence line, as transformers' own ``HfDocTestParser`` does.
"""

import doctest
import re

doctest.DocTestParser._EXAMPLE_RE = re.compile(
    r"""
    (?P<source>
        (?:^(?P<indent> [ ]*) >>>    .*)    # PS1 line
        (?:\n           [ ]*  \.\.\. .*)*)  # PS2 lines
    \n?
    (?P<want> (?:(?![ ]*$)                  # not a blank line
                 (?![ ]*>>>)                # not a PS1 line
                 (?![ ]*```)                # not a Markdown fence
                 .+$\n?                     # any other line
              )*)
    """,
    re.MULTILINE | re.VERBOSE,
)
