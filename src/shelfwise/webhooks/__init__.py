"""Signed webhooks: subscriptions, fan-out from the event stream, delivery with retries."""
