"""Accept-Language negotiation for error details and the demo page (SPEC §7)."""

from __future__ import annotations

import pytest

from tokenstile.api.messages import prefers_korean


@pytest.mark.parametrize(
    ("header", "korean"),
    [
        ("ko", True),
        ("ko-KR,ko;q=0.9,en;q=0.8", True),
        ("en-US,ko;q=0.3", False),
        ("en;q=0.5,ko;q=0.8", True),
        ("ko;q=0", False),
        ("ko;q=0,en;q=0.1", False),
        ("kok", False),
        ("", False),
        (None, False),
        ("ko;q=abc,en", False),
    ],
)
def test_korean_is_chosen_only_when_it_is_the_preferred_language(
    header: str | None, korean: bool
) -> None:
    assert prefers_korean(header) is korean
