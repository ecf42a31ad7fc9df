"""The demo page: one template, one strings file per language, rendered at startup."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from tokenstile.api import web
from tokenstile.api.web import TemplateError, load_strings, render_page, render_pages


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return render_pages()


def test_every_language_renders_with_no_placeholder_left(pages: dict[str, str]) -> None:
    assert set(pages) == set(web.LANGUAGES) == {"en", "ko"}
    for language, page in pages.items():
        assert page.startswith(f'<!doctype html>\n<html lang="{language}">\n')
        assert "{{" not in page
        assert "}}" not in page
        assert '<span id="username" class="username"></span>' in page
        assert '<div id="messages" hidden' in page


def test_the_languages_differ_only_in_their_strings(pages: dict[str, str]) -> None:
    assert "<title>tokenstile · Sign in</title>" in pages["en"]
    assert "<title>tokenstile · 로그인</title>" in pages["ko"]
    assert 'data-refreshed-peer="Refreshed by another tab"' in pages["en"]
    assert 'data-refreshed-peer="다른 탭에서 갱신됨"' in pages["ko"]
    assert 'aria-label="액세스 토큰의 남은 시간"' in pages["ko"]


def test_every_strings_file_has_exactly_the_same_keys() -> None:
    keys = {language: list(load_strings(language)) for language in web.LANGUAGES}
    files = sorted(path.stem for path in web.STRINGS_DIR.glob("*.json"))
    assert files == sorted(web.LANGUAGES)
    reference = set(keys["en"])
    for language, language_keys in keys.items():
        assert set(language_keys) == reference, language
        assert len(language_keys) == len(reference), language


def test_every_string_lands_in_the_page_escaped(pages: dict[str, str]) -> None:
    for language, page in pages.items():
        for key, text in load_strings(language).items():
            if key == "welcome":
                continue
            assert html.escape(text, quote=True) in page, (language, key)
    # The one string with a character that needs escaping today.
    assert "Kept in this tab&#x27;s memory." in pages["en"]
    assert "tab's" not in pages["en"]


def test_the_welcome_slot_follows_each_languages_word_order(pages: dict[str, str]) -> None:
    h1 = '<h1 id="welcome-title" tabindex="-1">'
    name = '<span id="username" class="username"></span>'
    muted = '<span class="welcome-prefix">'
    assert f"{h1}{muted}Welcome,</span> {name}</h1>" in pages["en"]
    assert f"{h1}{name}{muted}님, 환영합니다</span></h1>" in pages["ko"]


def test_strings_are_escaped_in_text_and_attributes() -> None:
    hostile = "\"><script>alert('x')</script>&amp;"
    rendered = render_page('<p title="{{ a }}">{{a}}</p>', {"a": hostile})
    escaped = "&quot;&gt;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;amp;"
    assert rendered == f'<p title="{escaped}">{escaped}</p>'


def test_the_welcome_text_is_escaped_too() -> None:
    rendered = render_page(
        "{{ welcome_before }}<b></b>{{ welcome_after }}", {"welcome": "<i>{username}&"}
    )
    muted = '<span class="welcome-prefix">'
    assert rendered == f"{muted}&lt;i&gt;</span><b></b>{muted}&amp;</span>"


def test_an_unknown_placeholder_raises() -> None:
    with pytest.raises(TemplateError, match=r"unknown placeholder \{\{ titel \}\}"):
        render_page("<title>{{ titel }}</title>", {"title": "x"})


@pytest.mark.parametrize(
    "template", ["<p>{{ a }</p>", "<p>{ a }}</p>", "<p>{{ a\n}}</p>", "<p>{{ a }}}}</p>"]
)
def test_a_malformed_placeholder_raises(template: str) -> None:
    with pytest.raises(TemplateError):
        render_page(template, {"a": "x"})


def test_a_string_the_template_never_uses_raises() -> None:
    with pytest.raises(TemplateError, match="never uses: b"):
        render_page("<p>{{ a }}</p>", {"a": "x", "b": "y"})


@pytest.mark.parametrize("welcome", ["Welcome", "{username} and {username}"])
def test_a_welcome_without_exactly_one_username_slot_raises(welcome: str) -> None:
    with pytest.raises(TemplateError, match="exactly once"):
        render_page("{{ welcome_before }}{{ welcome_after }}", {"welcome": welcome})


def test_a_typo_in_a_strings_file_fails_at_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for language in web.LANGUAGES:
        strings = load_strings(language)
        if language == "ko":
            strings["titel"] = strings.pop("title")
        (tmp_path / f"{language}.json").write_text(json.dumps(strings), encoding="utf-8")
    monkeypatch.setattr(web, "STRINGS_DIR", tmp_path)
    with pytest.raises(TemplateError, match=r"ko\.json: unknown placeholder \{\{ title \}\}"):
        render_pages()


def test_a_repeated_key_in_a_strings_file_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "en.json").write_text('{"a": "x", "a": "y"}', encoding="utf-8")
    monkeypatch.setattr(web, "STRINGS_DIR", tmp_path)
    with pytest.raises(TemplateError, match="'a' appears twice"):
        load_strings("en")
