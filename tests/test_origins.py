"""The one origin parser: a table of URLs and what origin (if any) they have."""

from __future__ import annotations

import pytest

from service.urls import is_bare_origin, web_origin

CASES = [
    ("https://app.example.com", "https://app.example.com"),
    ("https://App.Example.com/path?q=1#f", "https://app.example.com"),
    ("https://app.example.com:443/", "https://app.example.com"),
    ("http://127.0.0.1:8000/demo", "http://127.0.0.1:8000"),
    ("http://[::1]:8080/", "http://[::1]:8080"),
    ("https://app.example.com:8443", "https://app.example.com:8443"),
    ("//app.example.com/x", None),
    ("/relative", None),
    ("javascript:alert(1)", None),
    ("ftp://app.example.com", None),
    ("https://user:pass@app.example.com", None),
    ("https://app.example.com@evil.example", None),
    ("https://app.example.com:99999", None),
    ("https://app.example.com:abc", None),
    ("https:\\\\evil.example", None),
    ("https://*.example.com", None),
    ("https://\u212aapp.example.com", None),  # the Kelvin sign lower-cases to an ASCII k
    ("https://app.example.com/\x00", None),
    (" https://app.example.com", None),
    ("https://", None),
    ("", None),
]


@pytest.mark.parametrize(("url", "origin"), CASES)
def test_web_origin(url, origin):
    assert web_origin(url) == origin


@pytest.mark.parametrize(
    ("value", "bare"),
    [
        ("https://app.example.com", True),
        ("https://app.example.com/", True),
        ("https://app.example.com:443", True),
        ("http://localhost:3000", True),
        ("https://app.example.com/path", False),
        ("https://app.example.com?x=1", False),
        ("app.example.com", False),
        ("*", False),
    ],
)
def test_is_bare_origin(value, bare):
    assert is_bare_origin(value) is bare
