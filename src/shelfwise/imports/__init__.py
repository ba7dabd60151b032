"""CSV import of products: streamed upload, parsed off the event loop, upserted in batches."""
