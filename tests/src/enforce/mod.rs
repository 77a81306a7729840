//! Enforcement tests: what the kernel stops, for the gateway's children only.

mod egress;
mod exec;
mod files;

use crate::Test;

pub(crate) fn tests() -> Vec<Test> {
    let mut all = Vec::new();
    all.extend(files::tests());
    all.extend(egress::tests());
    all.extend(exec::tests());
    all
}
