//! A private `redis-server` on a free loopback port, for the tests, the benchmarks and the dev
//! launcher: nothing persisted, stopped when dropped. Never assumes a Redis on 6379.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a started server gets to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The program that is run.
const PROGRAM: &str = "redis-server";

/// A running `redis-server` of our own. Killed on drop.
#[derive(Debug)]
pub struct LocalRedis {
    /// Its loopback port.
    port: u16,
    /// The process, while it runs.
    child: Option<Child>,
}

impl LocalRedis {
    /// Starts `redis-server` on a free loopback port, with persistence off, and waits until it
    /// answers. Fails with a message that says how to install it when it is not on `PATH`.
    pub async fn start() -> io::Result<Self> {
        let port = free_port()?;
        let mut redis = Self { port, child: None };
        redis.spawn().await?;
        Ok(redis)
    }

    /// Whether `redis-server` can be run here.
    pub fn is_installed() -> bool {
        std::process::Command::new(PROGRAM)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL, database 0: `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (as a crash would: nothing is kept) and waits for it to be gone.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    /// Runs one command (inline protocol: words separated by spaces, none with a space or a
    /// newline of its own) and returns the raw reply, for tests that look at what is stored.
    pub async fn command(&self, line: &str) -> io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream.write_all(format!("{line}\r\n").as_bytes()).await?;
        let mut reply = vec![0; 64 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "redis did not answer"))??;
        reply.truncate(read);
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Spawns the process on `self.port` and waits for `PING`.
    async fn spawn(&mut self) -> io::Result<()> {
        let dir = std::env::temp_dir();
        let child = Command::new(PROGRAM)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!(
                        "could not run {PROGRAM} ({err}); install it (Debian/Ubuntu: \
                         `apt-get install -y redis-server`, macOS: `brew install redis`)"
                    ),
                )
            })?;
        self.child = Some(child);
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(reply) = self.command("PING").await
                && reply.starts_with("+PONG")
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!(
                    "{PROGRAM} on port {} exited at start ({status})",
                    self.port
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{PROGRAM} on port {} did not answer PING", self.port),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_answers_stops_and_restarts_empty() {
        let mut redis = LocalRedis::start().await.expect("redis-server runs");
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        assert!(redis.command("SET k v").await.unwrap().starts_with("+OK"));
        assert!(redis.command("GET k").await.unwrap().contains('v'));
        redis.stop().await.unwrap();
        assert!(redis.command("PING").await.is_err());
        redis.restart().await.unwrap();
        // Nothing was kept.
        assert!(redis.command("GET k").await.unwrap().starts_with("$-1"));
    }
}
