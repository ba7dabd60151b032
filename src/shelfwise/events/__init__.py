"""Domain events: the transactional outbox, its relay, and the published stream."""
