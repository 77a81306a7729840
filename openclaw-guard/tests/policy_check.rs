//! `openclaw-guard policy check` on the malformed-policy suite: each file in
//! `tests/policies/bad/` must fail with exit 2 and, for every line of its `.expect`
//! sidecar (`LINE:COL message`), a stderr line `FILE:LINE:COL: ...message...`. The
//! embedded default and the good fixtures must pass with exit 0.

#![expect(
    unused_crate_dependencies,
    reason = "integration test of the binary only"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const BIN: &str = env!("CARGO_BIN_EXE_openclaw-guard");

fn policies(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/policies")
        .join(sub)
}

fn guard(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run openclaw-guard")
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn malformed_policies_are_located_and_exit_2() {
    let files = toml_files(&policies("bad"));
    assert!(files.len() >= 20, "the suite has {} policies", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let path = f.to_str().expect("utf-8 path");
        let expect = fs::read_to_string(f.with_extension("expect"))
            .unwrap_or_else(|e| panic!("{path}: missing .expect sidecar: {e}"));
        let out = guard(&["policy", "check", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{path}: exit {:?}, want 2\n{stderr}",
                out.status.code()
            ));
            continue;
        }
        let mut n = 0;
        for want in expect.lines().filter(|l| !l.trim().is_empty()) {
            n += 1;
            let (loc, msg) = want.split_once(' ').expect("`LINE:COL message`");
            let prefix = format!("{path}:{loc}: ");
            if !stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(msg))
            {
                failures.push(format!(
                    "{path}: no line `{prefix}...{msg}...` in:\n{stderr}"
                ));
            }
        }
        assert!(n > 0, "{path}: empty .expect");
        // Every error also names what was expected or gives a hint.
        if !(stderr.contains("expected") || stderr.contains("hint:")) {
            failures.push(format!("{path}: neither expectation nor hint:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn all_semantic_errors_at_once() {
    let f = policies("bad/multiple_errors.toml");
    let out = guard(&["policy", "check", f.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains(": 5 errors"), "{stderr}");
}

#[test]
fn embedded_default_passes() {
    let out = guard(&["policy", "default"]);
    assert_eq!(out.status.code(), Some(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("default.toml");
    fs::write(&f, &out.stdout).expect("write default");
    let check = guard(&["policy", "check", f.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one-line summary: {stdout}");
    assert!(
        stdout.contains("ok: version 1, mode enforce, 8 rules"),
        "{stdout}"
    );
}

#[test]
fn good_policies_pass() {
    for f in toml_files(&policies("good")) {
        let path = f.to_str().expect("utf-8");
        let out = guard(&["policy", "check", path]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unreadable_file_exits_2() {
    let out = guard(&["policy", "check", "/nonexistent/policy.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read policy /nonexistent/policy.toml"));
}
