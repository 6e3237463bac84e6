"""`AyrshareClient`'s Profiles calls against the real emulator over HTTP: create (never repeated), delete, linked
accounts, unlink, and how each of Ayrshare's refusals surfaces, with no profile key in any error or log line."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from service.config import load_settings
from service.errors import BadRequest, UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
from service.upstream import (
    AyrshareClient,
    CreatedProfile,
    DuplicateTitle,
    LinkedAccounts,
    LinkOptions,
    MalformedAnswer,
    ProfileKeyRefused,
    UpstreamNotFound,
)
from tests.conftest import API_KEY, DATA_KEY, DOMAIN, INTERNAL_TOKEN, PROFILES, SIGNING_SECRET

FILE_KEY = PROFILES["alice"]


@pytest.fixture
def make_client(emulator, profiles_file, keypair):
    """`make_client(api_key=...)`: a client of the test emulator (short timeouts so a held answer times out)."""

    def make(api_key: str = API_KEY) -> AyrshareClient:
        settings = load_settings(
            {
                "AYRSHARE_API_KEY": api_key,
                "AYRSHARE_PRIVATE_KEY": keypair["private_pem"],
                "AYRSHARE_DOMAIN": DOMAIN,
                "AYRSHARE_BASE_URL": emulator.base_url,
                "LINK_ALLOWED_HOSTS": emulator.origin,
                "PROFILE_KEYS_FILE": str(profiles_file),
                "DATA_ENCRYPTION_KEY": DATA_KEY,
                "CONNECT_SIGNING_SECRET": SIGNING_SECRET,
                "INTERNAL_API_TOKEN": INTERNAL_TOKEN,
                "AYRSHARE_CONNECT_TIMEOUT": "1",
                "AYRSHARE_READ_TIMEOUT": "2",
                "AYRSHARE_DEADLINE_SECONDS": "6",
            }
        )
        return AyrshareClient(settings)

    return make


@pytest.fixture
def client(make_client) -> AyrshareClient:
    return make_client()


def link_on_page(url: str, network: str) -> None:
    """Press the linking page's Link button for `network` (what the person does; the page is a plain form)."""
    page = requests.get(url, timeout=10)
    assert page.status_code == 200, page.text
    parts = urlsplit(url)
    answer = requests.post(
        f"{parts.scheme}://{parts.netloc}{parts.path}",
        data={**dict(parse_qsl(parts.query)), "network": network, "op": "link"},
        timeout=10,
    )
    assert answer.status_code == 200


def test_create_profile_returns_the_key_and_ref_id(client, emulator):
    created = client.create_profile("Carol", {"tags": ["trial"]})
    assert isinstance(created, CreatedProfile) and created.title == "Carol"
    assert created.profile_key and created.ref_id
    assert created.profile_key not in repr(created)
    assert emulator.created_profiles()["count"] == 1 and emulator.profile_stats()["creates"] == 1


def test_a_created_key_works_for_a_link_session_and_reads_its_linked_accounts(client, emulator):
    created = client.create_profile("Carol")
    link = client.generate_link(created.profile_key, LinkOptions(allowed_social=("twitter",)))
    assert link.session_id and client.linked_accounts(created.profile_key) == LinkedAccounts()

    link_on_page(link.url, "twitter")
    accounts = client.linked_accounts(created.profile_key)
    assert accounts.networks == ("twitter",)

    client.unlink_network(created.profile_key, "twitter")
    assert client.linked_accounts(created.profile_key).networks == ()
    client.unlink_network(created.profile_key, "twitter")  # not linked: still a success, as the vendor documents


def test_create_is_not_repeated_after_a_500(client, emulator):
    emulator.set_knobs(fault="500")
    with pytest.raises(UpstreamUnavailable):
        client.create_profile("Carol")
    assert emulator.profile_stats()["creates"] == 1  # one attempt, no retry


@pytest.mark.parametrize("fault", ["503", "drop"])
def test_create_is_not_repeated_after_other_transient_faults(client, emulator, fault):
    emulator.set_knobs(fault=fault)
    with pytest.raises(UpstreamUnavailable):
        client.create_profile("Carol")
    assert emulator.profile_stats()["creates"] == 1


def test_create_is_not_repeated_after_a_timeout(client, emulator):
    emulator.set_knobs(latency_ms=3000)  # beyond the 2 s read timeout
    with pytest.raises(UpstreamTimeout):
        client.create_profile("Carol")
    assert emulator.profile_stats()["creates"] == 1


def test_reads_are_still_retried_after_a_5xx(client, emulator):
    emulator.set_knobs(fault="503")
    assert client.linked_accounts(FILE_KEY).networks == ()
    assert emulator.profile_stats()["user_reads"] == 2


def test_a_duplicate_title_raises_duplicate_title(client, emulator):
    client.create_profile("Carol")
    with pytest.raises(DuplicateTitle) as raised:
        client.create_profile("Carol")
    assert isinstance(raised.value, UpstreamRefused) and raised.value.code == "duplicate_title"
    assert emulator.created_profiles()["count"] == 1


def test_other_create_refusals_are_plain_refusals(client):
    with pytest.raises(UpstreamRefused) as raised:
        client.create_profile("Carol", {"disableSocial": ["myspace"]})
    assert not isinstance(raised.value, DuplicateTitle)


def test_an_answer_without_the_profile_key_is_malformed(client, emulator, caplog):
    emulator.set_knobs(fault="missing_profile_key")
    with caplog.at_level(logging.WARNING), pytest.raises(MalformedAnswer) as raised:
        client.create_profile("Carol")
    assert raised.value.reason == "missing_profile_key" and raised.value.status == 502
    assert emulator.created_profiles()["count"] == 1  # made, but orphaned: the log line says so
    assert any(getattr(record, "reason", None) == "missing_profile_key" for record in caplog.records)


def test_a_refused_key_raises_profile_key_refused_without_the_key_in_it(client, caplog):
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ProfileKeyRefused) as raised:
            client.linked_accounts("PK-NOT-OURS")
        with pytest.raises(ProfileKeyRefused):
            client.unlink_network("PK-NOT-OURS", "twitter")
    error = raised.value
    assert error.status == 422 and error.code == "profile_key_refused"
    assert "PK-NOT-OURS" not in str(error.public_fields())
    assert all("PK-NOT-OURS" not in record.getMessage() + str(record.__dict__) for record in caplog.records)


def test_delete_profile_then_the_key_is_refused(client, emulator):
    created = client.create_profile("Carol")
    client.delete_profile(created.profile_key)
    assert emulator.created_profiles()["count"] == 0
    with pytest.raises(ProfileKeyRefused):
        client.linked_accounts(created.profile_key)
    with pytest.raises(UpstreamNotFound):
        client.delete_profile(created.profile_key)


def test_a_bad_api_key_is_not_mistaken_for_a_refused_profile_key(make_client):
    client = make_client(api_key="API-KEY-REVOKED")
    with pytest.raises(UpstreamRefused) as raised:
        client.linked_accounts(FILE_KEY)
    assert not isinstance(raised.value, ProfileKeyRefused) and raised.value.code == "bad_api_key"
    with pytest.raises(UpstreamRefused) as raised:
        client.delete_profile(FILE_KEY)
    assert not isinstance(raised.value, UpstreamNotFound)


def test_unlink_refuses_a_network_ayrshare_cannot_unlink_without_calling_it(client, emulator):
    with pytest.raises(BadRequest):
        client.unlink_network(FILE_KEY, "pinterest")
    assert emulator.profile_stats()["social_unlinks"] == 0


def test_a_429_on_create_is_a_rate_limit_and_not_repeated(client, emulator):
    emulator.set_knobs(fault="429", fault_count=-1)
    with pytest.raises(UpstreamUnavailable) as raised:
        client.create_profile("Carol")
    assert raised.value.code == "upstream_rate_limited"
    assert emulator.profile_stats()["creates"] == 1
