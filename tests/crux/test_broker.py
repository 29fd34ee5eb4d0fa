"""The broker side of crux/broker.py: one publishing client per connection pool, and publishes and control
broadcasts that give up on a broker that does not answer."""

import time

import pytest
from celery import Celery
from django.conf import settings

from crux.broker import Channel, Connection
from crux.celery import app


def test_publishes_share_one_client_per_pool_and_a_new_pool_gets_a_new_client():
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
            assert first.ping()
        channel._disconnect_pools()  # what kombu does when the connection is lost
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.connection_pool is channel.pool
            assert third.ping()


def test_a_client_passed_in_is_used_as_it_is():
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as own, channel.conn_or_acquire(client=object) as passed:
            assert passed is object and own is not object


def bounded_app(broker_url: str) -> Celery:
    """A Celery app as the project configures it (crux.celery), on a broker of the test's own."""
    app = Celery("crux-test", set_as_current=False, amqp="crux.broker:AMQP")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = broker_url
    return app


def test_a_broadcast_to_a_broker_that_stops_answering_gives_up(private_redis):
    """Kombu retries a control broadcast (revoke, ping) forever when its caller passes no limit: not here."""
    app = bounded_app(private_redis.url)
    try:
        app.control.revoke("some-task", terminate=True)  # connected and pooled
        with app.pool.acquire() as pooled:
            assert isinstance(pooled, Connection)
        private_redis.pause()
        try:
            started = time.monotonic()
            with pytest.raises(Exception, match="Timeout"):
                app.control.revoke("some-task", terminate=True)
            assert time.monotonic() - started < 5 * settings.CELERY_PUBLISH_TIMEOUT  # before: never returned
        finally:
            private_redis.resume()
        app.control.revoke("some-task", terminate=True)  # the broker is back: the next broadcast goes through
    finally:
        app.close()


def test_a_publish_to_a_broker_that_never_answers_gives_up(hanging_server):
    app = bounded_app(hanging_server.url)
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match="Timeout"):
            app.send_task("crux.execute_task", args=["x"], retry_policy=settings.CELERY_TASK_PUBLISH_RETRY_POLICY)
        assert time.monotonic() - started < 5 * settings.CELERY_PUBLISH_TIMEOUT
        assert len(hanging_server.accepted) == 1  # one attempt: the re-dispatch sweep is the retry
    finally:
        app.close()
