//! Tests of the file-open sensor and protected-file rule (`lsm/file_open`).

use anyhow::{ensure, Context as _};

use std::os::unix::fs::MetadataExt as _;

use crate::{
    support::{ensure_folded, helper_bin, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        lsm_denies_protected_file_to_children,
        aliases_report_the_real_file,
        repeated_opens_folded_and_counted,
    ]
}

/// The gateway's child gets EPERM reading a protected file; the gateway itself and an
/// unrelated process still read it; the denial is recorded as a decision.
fn lsm_denies_protected_file_to_children() -> TestResult {
    let dir = Scratch::new("file-open")?;
    let secret = dir.path("secret.env");
    std::fs::write(&secret, "ANTHROPIC_API_KEY=sk-test\n")?;
    let d = dir.0.display();
    let script = format!(
        "cat '{s}' > '{d}/child.out' 2> '{d}/child.err'; echo $? > '{d}/child.rc'\n\
         read -r line < '{s}'; echo \"$line\" > '{d}/gateway.out'\n",
        s = secret.display()
    );
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--protect".into(),
            secret.display().to_string(),
        ],
    )?;
    if let Some(why) = guard.program_unavailable("file_open") {
        return Ok(Outcome::Skipped(format!(
            "BPF LSM not loadable on this kernel ({why})"
        )));
    }
    gateway.release_and_wait()?;
    let outsider =
        std::fs::read_to_string(&secret).context("an unrelated process reading the secret")?;
    let events = guard.stop()?;

    let rc = std::fs::read_to_string(dir.path("child.rc"))?;
    let err = std::fs::read_to_string(dir.path("child.err"))?;
    let out = std::fs::read_to_string(dir.path("child.out"))?;
    ensure!(
        rc.trim() != "0",
        "the child read the protected file (cat exited 0, printed {out:?})"
    );
    ensure!(
        err.contains("Operation not permitted"),
        "cat's error was not EPERM: {err:?}"
    );
    ensure!(out.is_empty(), "the child got content: {out:?}");
    let gw_read = std::fs::read_to_string(dir.path("gateway.out"))?;
    ensure!(
        gw_read.contains("sk-test"),
        "the gateway itself could not read its secret: {gw_read:?}"
    );
    ensure!(
        outsider.contains("sk-test"),
        "an unrelated process could not read the file"
    );
    let denial = events
        .iter()
        .find(|e| e["kind"] == "file_open" && e["decision"]["action"] == "deny")
        .with_context(|| format!("no deny decision recorded among {events:?}"))?;
    ensure!(
        denial["decision"]["errno"] == 1,
        "errno: {}",
        denial["decision"]
    );
    ensure!(
        denial["root"] == gw && denial["depth"] == 1,
        "denial not attributed to the gateway's child: {denial}"
    );
    Ok(Outcome::Passed)
}

/// Opens through a symlink, `..`, /proc/self/root, openat2 and O_PATH + /proc/self/fd
/// all report the real file's (dev, inode) and resolved path.
fn aliases_report_the_real_file() -> TestResult {
    let dir = Scratch::new("file-alias")?;
    let real = dir.path("real.txt");
    std::fs::write(&real, "data\n")?;
    std::fs::create_dir(dir.path("sub"))?;
    std::os::unix::fs::symlink(&real, dir.path("link"))?;
    let meta = std::fs::metadata(&real)?;
    let want_dev = format!("{}:{}", libc::major(meta.dev()), libc::minor(meta.dev()));
    let d = dir.0.display();
    let h = helper_bin();
    let script = format!(
        "cat '{d}/link' >/dev/null\n\
         cat '{d}/sub/../real.txt' >/dev/null\n\
         cat '/proc/self/root{d}/real.txt' >/dev/null\n\
         '{h}' helper openat2 '{d}/link' >/dev/null\n\
         '{h}' helper opath-reopen '{d}/real.txt' >/dev/null\n"
    );
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(&dir, &["--pid".into(), gw.to_string()])?;
    // The tracepoint tier sees the same opens but cannot resolve paths (bpf_d_path is
    // LSM-only): identity is checked on both tiers, the path on the LSM tier.
    let lsm = guard.program_attached("file_open");
    // Before 5.11 the LSM program may not call bpf_d_path either (its compat program
    // reports the caller's path when it names the file, else none).
    let resolved = lsm
        && !guard
            .startup
            .iter()
            .any(|l| l.contains("as file_open_compat"));
    if !lsm && !guard.program_attached("sys_exit_openat") {
        let why = guard.program_unavailable("file_open").unwrap_or_default();
        return Ok(Outcome::Skipped(format!(
            "no open sensor loads here ({why})"
        )));
    }
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let real_path = std::fs::canonicalize(&real)?.display().to_string();
    let hits: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "file_open" && e["ino"] == meta.ino())
        .collect();
    for h in &hits {
        ensure!(
            h["dev"] == want_dev.as_str(),
            "dev {} != {want_dev}: {h}",
            h["dev"]
        );
        ensure!(
            !resolved || h["path"] == real_path.as_str(),
            "path {} != {real_path}",
            h["path"]
        );
    }
    let procs: std::collections::HashSet<_> = hits.iter().map(|h| h["tgid"].as_u64()).collect();
    ensure!(
        procs.len() >= 5,
        "expected opens of the real file by 5 processes, got {}: {hits:?}",
        procs.len()
    );
    Ok(Outcome::Passed)
}

/// A child opening one file 2000 times in a loop: a few full `file_open` events, the
/// rest as `repeat` counts, and together exactly 2000; a different file in between
/// is reported in full.
fn repeated_opens_folded_and_counted() -> TestResult {
    const N: u64 = 2000;
    let dir = Scratch::new("file-open-fold")?;
    let target = dir.path("target");
    let other = dir.path("other");
    std::fs::write(&target, "x")?;
    std::fs::write(&other, "y")?;
    let h = helper_bin();
    let (t, o) = (target.display(), other.display());
    let script = format!(
        "'{h}' helper open-loop {half} '{t}'; '{h}' helper open-loop 1 '{o}'; '{h}' helper open-loop {half} '{t}'\n",
        half = N / 2
    );
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(&dir, &["--pid".into(), gw.to_string()])?;
    if !guard.program_attached("file_open") && !guard.program_attached("sys_exit_openat") {
        let why = guard.program_unavailable("file_open").unwrap_or_default();
        return Ok(Outcome::Skipped(format!(
            "no open sensor loads here ({why})"
        )));
    }
    let code = gateway.release_and_wait()?;
    ensure!(code == 0, "helper failed with {code}");
    let events = guard.stop()?;
    let ino = std::fs::metadata(&target)?.ino();
    let other_ino = std::fs::metadata(&other)?.ino();
    let full = events
        .iter()
        .filter(|e| e["kind"] == "file_open" && e["ino"] == ino)
        .count() as u64;
    let folded: u64 = events
        .iter()
        .filter(|e| e["kind"] == "repeat" && e["of"] == "file_open" && e["ino"] == ino)
        .filter_map(|e| e["count"].as_u64())
        .sum();
    ensure_folded("opens", N, full, folded, &events)?;
    ensure!(
        events
            .iter()
            .any(|e| e["kind"] == "file_open" && e["ino"] == other_ino),
        "the open of the other file was not reported"
    );
    Ok(Outcome::Passed)
}
