"""The Redis transport of crux/broker.py: one publishing client per connection pool."""

from crux.broker import Channel
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
