//! One module per sensor, named after its kernel hook, holding that sensor's tests.

mod discovery;
mod exec;
mod file_open;
mod net;
mod transport;
mod tree;

use crate::Test;

pub(crate) fn tests() -> Vec<Test> {
    let mut all = Vec::new();
    all.extend(discovery::tests());
    all.extend(exec::tests());
    all.extend(file_open::tests());
    all.extend(net::tests());
    all.extend(transport::tests());
    all.extend(tree::tests());
    all
}
