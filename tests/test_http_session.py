"""The shared venue session against the sandbox: Retry-After, backoff, give-up messages, options from env."""

from __future__ import annotations

import socket
import time

import pytest
from schemahub_binance.connector import POLICY as BINANCE
from schemahub_binance.connector import BinanceConnector

from schemahub_core import ConnectorError, RateLimit, VenuePolicy, VenueUnreachable, venue_session
from schemahub_core.framework.config import ConfigError, load_settings
from schemahub_core.testing.sandbox import _clear_sandbox_faults, sandbox  # noqa: F401


def test_rate_limit_text_and_options_from_config_or_env():
    assert RateLimit.parse("6000/60") == RateLimit(6000, 60.0)
    assert RateLimit.parse("10/1s").per_second == 10
    with pytest.raises(ValueError, match="expected LIMIT/SECONDS"):
        RateLimit.parse("fast")
    policy = BINANCE.with_options({"rate_limit": "120/1", "timeout": "0.5", "max_retries": "2"})
    assert (policy.rate, policy.timeout, policy.max_retries) == (RateLimit(120, 1.0), 0.5, 2)
    with pytest.raises(ConfigError, match="connector binance: option rate_limit=.lots. .*SCHEMAHUB_BINANCE_RATE_LIMIT"):
        BINANCE.with_options({"rate_limit": "lots"})


def test_env_points_a_connector_at_the_sandbox(sandbox, monkeypatch, tmp_path):  # noqa: F811
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    connector = BinanceConnector(load_settings().connector_options("binance"))
    assert connector.base_url == sandbox.base_url("binance")
    assert connector.session.policy.rate == RateLimit.parse(sandbox.venues["binance"].limit.spec())
    page = next(connector.fetch("quotes", "BTC-USDT", None))
    assert page.records[0]["symbol"] == "BTCUSDT"


def test_retry_after_is_waited_out_exactly_once(sandbox):  # noqa: F811
    session = venue_session(BINANCE, {"rate_limit": "100000/1"})
    sandbox.inject("binance", "429", retry_after=0.4)
    started = time.monotonic()
    body, response = session.get_json(sandbox.base_url("binance") + "/api/v3/ping")
    assert body == {} and response.status_code == 200
    assert time.monotonic() - started >= 0.4
    assert (session.stats.retries, session.stats.rate_limited) == (1, 1)
    assert 418 not in session.stats.by_status


def test_persistent_5xx_gives_up_with_one_clear_line(sandbox):  # noqa: F811
    session = venue_session(BINANCE, {"rate_limit": "100000/1", "max_retries": "2", "backoff": "0.01"})
    sandbox.inject("binance", "5xx", status=503, count=5)
    with pytest.raises(ConnectorError) as err:
        session.get_json(sandbox.base_url("binance") + "/api/v3/ping")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("binance: HTTP 503 on /binance/api/v3/ping: An unknown error occurred")
    assert message.endswith("(gave up after 2 retries)")
    assert session.stats.requests == 3


def test_refused_connection_is_reported_at_once_not_retried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    session = venue_session(VenuePolicy("nowhere", RateLimit(1000, 1), max_retries=2, backoff=0.01))
    with pytest.raises(VenueUnreachable, match=rf"cannot reach http://127.0.0.1:{port} \(connection refused\)"):
        session.get_json(f"http://127.0.0.1:{port}/x")
    assert session.stats.retries == 0  # nothing listens: retrying for minutes would only hide it


def test_timeouts_are_retried(sandbox):  # noqa: F811
    session = venue_session(BINANCE, {"rate_limit": "100000/1", "timeout": "0.3", "backoff": "0.01"})
    sandbox.inject("binance", "timeout", delay=1.0)
    body, _ = session.get_json(sandbox.base_url("binance") + "/api/v3/time")
    assert body["serverTime"] > 1_707_000_000_000 and session.stats.retries == 1


def test_split_json_array_keeps_each_elements_exact_text():
    from schemahub_core.framework.http import split_json_array

    text = ' [ {"a":1, "p":"4.50000000"} ,{"a":2,"n":[1,{"x":"},{"}]}\n,3,"s" ] '
    array = split_json_array(text)
    assert array == [{"a": 1, "p": "4.50000000"}, {"a": 2, "n": [1, {"x": "},{"}]}, 3, "s"]
    assert array.texts == ['{"a":1, "p":"4.50000000"}', '{"a":2,"n":[1,{"x":"},{"}]}', "3", '"s"']
    assert split_json_array("[]") == [] and split_json_array('{"code":-1121}') is None
    for text, texts in (('[{"a":1,"p":"2.5"},{"a":2,"p":"3.5"}]', ['{"a":1,"p":"2.5"}', '{"a":2,"p":"3.5"}']),
                        ('[{"a":"},{"}]', ['{"a":"},{"}']), ('[{"a":"}{"},{"b":1}]', ['{"a":"}{"}', '{"b":1}']),
                        ('[{"a":{}},{"b":[1,2]}]', ['{"a":{}}', '{"b":[1,2]}'])):
        assert split_json_array(text).texts == texts, text
    for bad in ('[{"a":1},]', '[{"a":1}', '[{"a":1}] x', '[1 2]'):
        with pytest.raises(ValueError):
            split_json_array(bad)
