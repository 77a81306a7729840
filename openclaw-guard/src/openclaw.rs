//! Facts about OpenClaw, defined once: ports, state paths, secrets.
