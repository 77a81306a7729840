//! Commands that are not the daemon: reviewing policies against the record.

pub mod policy;
