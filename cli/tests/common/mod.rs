//! Runs the `oms` binary the way a user does.

use tokio::process::Command;

/// What one run of `oms` did.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `oms --set S ... ARGS`, each of `settings` as a `--set`.
pub async fn oms(settings: &[String], args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oms"));
    for setting in settings {
        command.args(["--set", setting]);
    }
    let output = command.args(args).output().await.expect("run oms");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    Run {
        ok: output.status.success(),
        stdout: text(output.stdout),
        stderr: text(output.stderr),
    }
}
