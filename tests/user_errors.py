"""What an error a user sees must look like: one line."""
from __future__ import annotations

import pytest


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    """The error's message, checked to be one non-empty line."""
    text = str(err.value)
    assert text and "\n" not in text, text
    return text
