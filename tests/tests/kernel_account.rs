//! When Quire runs as root, kernels run as the configured local account: its uid, gid and
//! groups, its home, never root. The test creates (and removes) its own account.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use quire_tests::accounts::{is_root, shared_kernelspec, TestAccount};
use quire_tests::{notebook_with, TestServer, YClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_started_for_an_account_runs_as_that_account() {
    if !is_root() {
        eprintln!("SKIPPED: running kernels as another account needs root (CI runs as root)");
        return;
    }
    let account = TestAccount::create(&format!("quirek{}", std::process::id() % 100000), None);
    let specs = shared_kernelspec();
    let config = format!(
        "kernel_user = \"{}\"\ndefault_kernel = \"as-account\"\nkernel_dirs = [\"{}\"]\n",
        account.name,
        specs.path().display()
    );
    let code = "import os\nprint(os.getuid(), os.getgid(), os.path.expanduser('~'))";
    let server = TestServer::start_with_config(&[("nb.ipynb", &notebook_with(&[code]))], &config);
    // The account must be able to reach the notebook's folder (its kernel's working directory);
    // the server's own state directory stays private.
    std::fs::set_permissions(&server.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let answer = ada.execute("cell-0").await;
    assert_eq!(answer["status"], "queued", "{answer}");
    assert_eq!(ada.wait_run("cell-0", Duration::from_secs(60)).await, "ok");
    let printed = ada.cell("cell-0").outputs[0]["text"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();
    let home = account.home().display().to_string();
    assert_eq!(
        printed,
        format!("{} {} {home}", account.id("-u"), account.id("-g")),
        "the kernel runs as the account, with its home"
    );
}
