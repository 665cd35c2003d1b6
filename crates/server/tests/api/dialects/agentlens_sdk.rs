//! The real AgentLens Python SDK (`agentlensai` from PyPI, unmodified) and
//! the `openai` client against the running server: see
//! tests/agentlens/sdk_e2e.py. `.ci/run` installs both into its virtualenv
//! and runs this with `--ignored`; set AGENTLEDGER_PYTHON to that
//! interpreter to run it by hand.

use crate::helpers::*;

#[tokio::test]
#[ignore = "needs agentlensai==0.12.0 and openai (run by .ci/run with AGENTLEDGER_PYTHON)"]
async fn agentlens_python_sdk_reads_back_what_its_openai_instrumentation_recorded() {
    let app = spawn_app().await;
    let python = std::env::var("AGENTLEDGER_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!("{}/tests/agentlens/sdk_e2e.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .env("AGENTLEDGER_URL", &app.base)
        .env("AGENTLEDGER_KEY", &app.key)
        // The SDK must reach this server and the stub directly.
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .await
        .expect("run python");
    // The script's own report, in the test's output (shown with --nocapture).
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "sdk_e2e.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
