//! The forensic recorder: durable, hash-chained, queryable.
