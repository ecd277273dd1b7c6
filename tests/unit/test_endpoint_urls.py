"""Endpoint URLs of topic rule destinations and http actions: user input, so a malformed one is a 400, not a 500."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidRequestException
from gateway.rules.destinations import check_endpoint_url


@pytest.mark.parametrize("url", ["https://example.com/hook", "http://127.0.0.1:8080/x", "http://localhost/x"])
def test_https_and_loopback_http_are_taken(url: str) -> None:
    check_endpoint_url(url, "confirmationUrl")


@pytest.mark.parametrize("url", ["https://[::1", "https://[zz]/", "http://example.com/x", "ftp://127.0.0.1/", ""])
def test_anything_else_is_an_invalid_request(url: str) -> None:
    with pytest.raises(InvalidRequestException, match="confirmationUrl"):
        check_endpoint_url(url, "confirmationUrl")
