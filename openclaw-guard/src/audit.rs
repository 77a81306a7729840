//! Posture audit of an OpenClaw host (`openclaw-guard audit`).
