//! A real terminal for interactive sessions: a command run in `tmux` on a
//! socket of its own, typed into and read from the screen as a person
//! would. The tmux server ends with the value.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Output;

pub struct Terminal {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    home: PathBuf,
    path: String,
}

/// The name of the one window.
const NAME: &str = "t";

impl Terminal {
    /// Runs `command` (a shell command line) in a 100×30 terminal, with
    /// `home` as `HOME` and `path` as `PATH`.
    pub fn start(home: &Path, path: &str, command: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let t = Self {
            sock: dir.path().join("tmux.sock"),
            _dir: dir,
            home: home.to_owned(),
            path: path.to_owned(),
        };
        let out = t.tmux(&["new-session", "-d", "-s", NAME, "-x", "100", "-y", "30", command]);
        anyhow::ensure!(out.status == 0, "start tmux: {out:?}");
        Ok(t)
    }

    fn tmux(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.sock)
            .args(args)
            .env("HOME", &self.home)
            .env("PATH", &self.path)
            .env("TERM", "xterm-256color")
            .env_remove("TMUX")
            .output();
        match out {
            Ok(out) => Output {
                status: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => Output {
                status: -1,
                stdout: String::new(),
                stderr: format!("run tmux: {e}"),
            },
        }
    }

    /// What the screen shows now.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", NAME]).stdout
    }

    /// Whether a line ends in a shell prompt (`$` or `#`; tmux trims the
    /// space after it).
    pub fn shows_prompt(&self) -> bool {
        self.screen()
            .lines()
            .any(|l| matches!(l.trim_end().chars().last(), Some('#' | '$')))
    }

    /// Waits up to `secs` for a prompt; `context` says what else to show
    /// when none comes (a log).
    pub fn wait_for_prompt(&self, secs: u64, context: impl Fn() -> String) -> anyhow::Result<()> {
        self.wait(secs, || {
            anyhow::ensure!(self.shows_prompt(), "no prompt:\n{}\n{}", self.screen(), context());
            Ok(())
        })
    }

    /// Types `line` and Enter.
    pub fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", NAME, line, "Enter"]);
    }

    /// Waits up to `secs` for `text` on the screen.
    pub fn wait_for_text(&self, text: &str, secs: u64) -> anyhow::Result<()> {
        self.wait(secs, || {
            let s = self.screen();
            anyhow::ensure!(s.contains(text), "{text:?} is not on the screen:\n{s}");
            Ok(())
        })
    }

    /// Whether the command still runs.
    pub fn running(&self) -> bool {
        self.tmux(&["has-session", "-t", NAME]).status == 0
    }

    /// Waits up to `secs` for the command to end.
    pub fn wait_for_end(&self, secs: u64) -> anyhow::Result<()> {
        self.wait(secs, || {
            anyhow::ensure!(!self.running(), "still running:\n{}", self.screen());
            Ok(())
        })
    }

    fn wait(&self, secs: u64, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match f() {
                Ok(()) => return Ok(()),
                Err(e) if std::time::Instant::now() >= until => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
