"""The event bus: the ordered outbox stream published to RabbitMQ, and the consumer side.

- `publisher.py`: one active publisher across all workers sends every stamped outbox
  event, in position order, to the durable topic exchange `shelfwise.events` with
  publisher confirms; its position lives in PostgreSQL and moves only after confirms.
- `consumer.py`: an inbox consumer (queue + bindings, prefetch, batches claimed, handled
  and committed in one transaction, ack after commit, dedup by `message_id`, dead letters
  after N deliveries); `replay.py`: dead-letter replay; `inbox.py`: inbox retention.
- `topology.py`: exchange, queue and dead-letter names and declarations.
- `envelope.py`: how an outbox row becomes an AMQP message and back.

Contract and reasoning: docs/events.md ("The event bus"), docs/decisions/0016, 0025.
"""
