"""Opening sessions: refused, TLS (STARTTLS and implicit) with verified certificates, AUTH."""

from __future__ import annotations

import pytest

from campaignd.delivery.smtp import ConnectionFailed

from .conftest import MakePool, MakeServer, envelope
from .servers import TlsFiles, refused_port, service_for


async def test_refused_connection_raises_connection_failed(make_pool: MakePool) -> None:
    port = refused_port()
    pool = make_pool(service_for(port))
    for attempt in (1, 2):
        with pytest.raises(ConnectionFailed) as caught:
            await pool.send(envelope())
        exc = caught.value
        assert exc.stage == "connect" and exc.step == "connect" and exc.temporary
        assert exc.reason == f"connection refused by 127.0.0.1:{port}"
        assert exc.service == "relay" and isinstance(exc, ConnectionError)
        assert pool.stats.consecutive_failures == attempt
    assert pool.stats.last_error == f"connection refused by 127.0.0.1:{port}"


async def test_failures_reset_after_a_session_opens(
    make_server: MakeServer, make_pool: MakePool
) -> None:
    server = make_server()
    pool = make_pool(server.service(host="127.0.0.1"))
    assert (await pool.send(envelope())).kind == "sent"
    assert pool.stats.consecutive_failures == 0 and pool.stats.healthy


async def test_starttls_with_tls_ca_file(
    make_server: MakeServer, make_pool: MakePool, tls_files: TlsFiles
) -> None:
    server = make_server(starttls=tls_files)
    pool = make_pool(server.service())  # security: starttls, tls_ca_file: the test CA
    assert (await pool.send(envelope())).kind == "sent"
    assert server.messages[0].tls
    assert server.ehlo_count == 2  # EHLO, STARTTLS, EHLO again (RFC 3207)


async def test_starttls_by_host_name(
    make_server: MakeServer, make_pool: MakePool, tls_files: TlsFiles
) -> None:
    server = make_server(starttls=tls_files)
    pool = make_pool(server.service(host="localhost"))
    assert (await pool.send(envelope())).kind == "sent"


async def test_starttls_unknown_ca_is_a_connection_failure(
    make_server: MakeServer, make_pool: MakePool, tls_files: TlsFiles, other_tls: TlsFiles
) -> None:
    server = make_server(starttls=tls_files)
    pool = make_pool(server.service(tls_ca_file=str(other_tls.ca_file)))
    with pytest.raises(ConnectionFailed) as caught:
        await pool.send(envelope())
    assert caught.value.stage == "starttls" and caught.value.step == "starttls"
    assert caught.value.reason.startswith(
        "TLS handshake failed with 127.0.0.1:"
    ) and "certificate verify failed: unable to get local issuer certificate" in (
        caught.value.reason
    )
    assert server.messages == []


async def test_starttls_required_but_not_offered(
    make_server: MakeServer, make_pool: MakePool
) -> None:
    server = make_server()
    pool = make_pool(server.service(security="starttls"))
    with pytest.raises(ConnectionFailed, match="does not offer STARTTLS") as caught:
        await pool.send(envelope())
    assert caught.value.stage == "starttls"
    assert server.messages == []


async def test_implicit_tls(
    make_server: MakeServer, make_pool: MakePool, tls_files: TlsFiles
) -> None:
    server = make_server(implicit_tls=tls_files)
    pool = make_pool(server.service())  # security: tls
    assert (await pool.send(envelope())).kind == "sent"
    assert server.messages[0].tls


async def test_implicit_tls_unknown_ca(
    make_server: MakeServer, make_pool: MakePool, tls_files: TlsFiles, other_tls: TlsFiles
) -> None:
    server = make_server(implicit_tls=tls_files)
    pool = make_pool(server.service(tls_ca_file=str(other_tls.ca_file)))
    with pytest.raises(ConnectionFailed, match="certificate verify failed") as caught:
        await pool.send(envelope())
    assert caught.value.stage == "connect" and caught.value.step == "tls"


async def test_missing_tls_ca_file(make_server: MakeServer, make_pool: MakePool) -> None:
    server = make_server()
    pool = make_pool(server.service(security="starttls", tls_ca_file="/nonexistent/ca.pem"))
    with pytest.raises(ConnectionFailed, match=r"cannot load tls_ca_file /nonexistent/ca\.pem"):
        await pool.send(envelope())


async def test_auth_accepted(
    make_server: MakeServer, make_pool: MakePool, tls_files: TlsFiles
) -> None:
    server = make_server(starttls=tls_files, auth=("outreach", "s3cret"))
    service = server.service(username="outreach", password_env="RELAY_PASSWORD")
    pool = make_pool(service, env={"RELAY_PASSWORD": "s3cret"})
    assert (await pool.send(envelope())).kind == "sent"
    assert (await pool.send(envelope())).kind == "sent"
    assert server.logins == [("outreach", "s3cret", True)]  # once per session, not per message
    assert [m.login for m in server.messages] == ["outreach", "outreach"]


async def test_auth_without_tls(make_server: MakeServer, make_pool: MakePool) -> None:
    server = make_server(auth=("outreach", "s3cret"))
    pool = make_pool(server.service(username="outreach", password="s3cret"))
    assert (await pool.send(envelope())).kind == "sent"
    assert server.messages[0].login == "outreach"


async def test_auth_rejected(
    make_server: MakeServer, make_pool: MakePool, tls_files: TlsFiles
) -> None:
    server = make_server(starttls=tls_files, auth=("outreach", "s3cret"))
    service = server.service(username="outreach", password_env="RELAY_PASSWORD")
    pool = make_pool(service, env={"RELAY_PASSWORD": "wrong"})
    with pytest.raises(ConnectionFailed) as caught:
        await pool.send(envelope())
    exc = caught.value
    assert exc.stage == "auth" and exc.code == 535 and exc.enhanced == "5.7.8"
    assert exc.reason == "AUTH rejected: 535 5.7.8 Authentication credentials invalid"
    assert server.messages == []


async def test_auth_secret_missing_names_the_variable(
    make_server: MakeServer, make_pool: MakePool
) -> None:
    server = make_server(auth=("outreach", "s3cret"))
    service = server.service(username="outreach", password_env="RELAY_PASSWORD")
    pool = make_pool(service, env={})
    with pytest.raises(ConnectionFailed, match="environment variable RELAY_PASSWORD") as caught:
        await pool.send(envelope())
    assert caught.value.stage == "auth"
    assert server.logins == []


async def test_server_requiring_auth_fails_the_session_not_the_message(
    make_server: MakeServer, make_pool: MakePool
) -> None:
    server = make_server(auth=("outreach", "s3cret"))
    pool = make_pool(server.service())  # no username: configured
    with pytest.raises(ConnectionFailed, match="the server requires AUTH") as caught:
        await pool.send(envelope())
    assert caught.value.stage == "auth"
    assert "530 5.7.0 Authentication required" in caught.value.reason
    assert pool.stats.consecutive_failures == 1 and pool.stats.open_sessions == 0
