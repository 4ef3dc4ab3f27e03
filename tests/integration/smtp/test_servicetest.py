"""campaignctl test-service: each step with the server's words, and a hint when one fails."""

from __future__ import annotations

from campaignd.delivery.servicetest import test_service as run_test_service

from .conftest import MakeServer
from .servers import TlsFiles, refused_port, service_for


async def test_all_steps_ok_with_a_test_message(
    make_server: MakeServer, tls_files: TlsFiles
) -> None:
    server = make_server(starttls=tls_files, auth=("outreach", "s3cret"))
    service = server.service(username="outreach", password_env="PW")
    report = await run_test_service(
        "relay", service, to="ops@example.com", env={"PW": "s3cret"}, local_hostname="c.test"
    )
    assert report.ok
    assert [s.name for s in report.steps] == [
        "connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data",
    ]  # fmt: skip
    details = {s.name: s.detail for s in report.steps}
    assert details["connect"].startswith("220 mx.test")
    assert "STARTTLS" in details["ehlo"]
    assert "certificate verified for 127.0.0.1" in details["starttls"]
    assert details["auth"].startswith("235 2.7.0") and "(as outreach)" in details["auth"]
    assert details["data"].startswith("354 ") and "message: 250 2.0.0 Ok" in details["data"]
    [message] = server.messages
    assert message.rcpt_tos == ["ops@example.com"] and message.tls
    assert b"Subject: campaignd test-service relay" in message.data
    text = report.render()
    assert text.splitlines()[0] == (
        f"test-service relay: 127.0.0.1:{server.port} (security: starttls)"
    )
    assert text.splitlines()[-1] == "result: ok — a test message to ops@example.com was accepted"
    assert report.as_dict()["ok"] is True


async def test_without_to_nothing_is_sent(make_server: MakeServer) -> None:
    server = make_server()
    report = await run_test_service("relay", server.service(), to=None)
    assert report.ok
    assert [(s.name, s.status) for s in report.steps] == [
        ("connect", "ok"), ("ehlo", "ok"), ("auth", "skipped"),
    ]  # fmt: skip
    assert server.messages == []
    assert "add --to ADDR" in report.render()


async def test_refused_says_where_to_look() -> None:
    port = refused_port()
    report = await run_test_service("relay", service_for(port), to=None)
    assert not report.ok
    [step] = report.steps
    assert (step.name, step.status) == ("connect", "failed")
    assert step.detail == f"connection refused by 127.0.0.1:{port}"
    assert step.hint is not None
    assert step.hint.startswith(f"is the relay listening on 127.0.0.1:{port}?")
    assert "services.d/relay.yaml" in step.hint
    assert report.render().splitlines()[-1] == "result: FAILED at connect"


async def test_no_starttls_offered(make_server: MakeServer) -> None:
    server = make_server()
    report = await run_test_service("relay", server.service(security="starttls"), to=None)
    assert not report.ok
    failed = report.steps[-1]
    assert (failed.name, failed.status) == ("starttls", "failed")
    assert failed.hint == "server does not offer STARTTLS — set security: none or tls"


async def test_untrusted_certificate(
    make_server: MakeServer, tls_files: TlsFiles, other_tls: TlsFiles
) -> None:
    server = make_server(implicit_tls=tls_files)
    service = server.service(tls_ca_file=str(other_tls.ca_file))
    report = await run_test_service("relay", service, to=None)
    failed = report.steps[-1]
    assert (failed.name, failed.status) == ("tls", "failed")
    assert "certificate verify failed" in failed.detail
    assert failed.hint is not None and "tls_ca_file:" in failed.hint


async def test_auth_rejected_points_at_the_secret(
    make_server: MakeServer, tls_files: TlsFiles
) -> None:
    server = make_server(starttls=tls_files, auth=("outreach", "s3cret"))
    service = server.service(username="outreach", password_env="PW")
    report = await run_test_service("relay", service, to=None, env={"PW": "nope"})
    failed = report.steps[-1]
    assert (failed.name, failed.status) == ("auth", "failed")
    assert failed.detail.startswith("AUTH rejected: 535 5.7.8")
    assert failed.hint == (
        "check username: in services.d/relay.yaml and the password in environment variable PW"
    )


async def test_refused_recipient(make_server: MakeServer) -> None:
    server = make_server()
    server.reply("rcpt", "550 5.1.1 user unknown")
    report = await run_test_service("relay", server.service(), to="gone@example.com")
    assert not report.ok
    assert [(s.name, s.status) for s in report.steps][-2:] == [("mail", "ok"), ("rcpt", "failed")]
    assert report.steps[-1].detail == "550 5.1.1 user unknown"
    assert "FAIL  rcpt" in report.render()


async def test_auth_required_but_not_configured(make_server: MakeServer) -> None:
    server = make_server(auth=("outreach", "s3cret"))
    report = await run_test_service("relay", server.service(), to="ops@example.com")
    failed = report.steps[-1]
    assert (failed.name, failed.status) == ("mail", "failed")
    assert failed.detail == "530 5.7.0 Authentication required"
    assert failed.hint == (
        "the server requires AUTH — set username: and password_env: in services.d/relay.yaml"
    )
