"""MkDocs hook: show Sphinx-style roles of wgpy's docstrings as code in the API pages.

Much of wgpy documents references as ``:meth:`Device.handle_timer``` (read by people in the
source and by IDEs); mkdocstrings renders docstrings as Markdown, where such a role would show
as ``:meth:`` followed by code. This keeps the code and drops the role (and a leading ``~``).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|attr|data|mod|exc|obj):(<code>)~?")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(r"\1", html)
