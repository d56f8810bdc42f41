//! Running a child process (a delegated plugin, iptables-restore, nft) within the
//! invocation's deadline.
//!
//! Why not `Command::output`: it waits for ever on a child that hangs, and writing all of
//! stdin before reading stdout deadlocks with a child that answers before it has read its
//! input (its stdout pipe fills while our write blocks on its full stdin pipe). Here stdin is
//! fed from a second thread while this one reads stdout, and the child is killed (SIGKILL,
//! then reaped) once the deadline passes.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::deadline;

/// What a finished child left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// Empty unless stderr was captured.
    pub stderr: Vec<u8>,
}

/// Why a child did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Killed when the invocation's deadline passed.
    #[error("still running after {} ms, killed", .0.as_millis())]
    TimedOut(Duration),
}

impl ChildError {
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            ChildError::Io(e) => e.raw_os_error(),
            ChildError::TimedOut(_) => None,
        }
    }
}

/// How much of stdin is written inline: a pipe holds at least one page even when the user's
/// pipe quota is spent, so a write this small never blocks on a child that does not read.
const INLINE_STDIN: usize = 4096;

/// Runs `cmd` with `stdin` as its input; stdout is captured, stderr is captured when
/// `capture_stderr`, inherited otherwise. Gives up at the invocation's deadline.
pub fn run(cmd: &mut Command, stdin: &[u8], capture_stderr: bool) -> Result<Finished, ChildError> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()?;
    let input = child.stdin.take();
    let outcome = std::thread::scope(|scope| {
        let writer = match input {
            Some(mut pipe) if stdin.len() > INLINE_STDIN => {
                Some(scope.spawn(move || write_all_tolerant(&mut pipe, stdin)))
            }
            Some(mut pipe) => {
                write_all_tolerant(&mut pipe, stdin)?;
                None
            }
            None => None,
        };
        let read = read_outputs(&mut child);
        if read.is_err() {
            // Killing the child closes its end of the stdin pipe, so the writer ends too.
            kill(&mut child);
        }
        if let Some(writer) = writer {
            match writer.join() {
                Ok(result) => result?,
                Err(_) => return Err(ChildError::Io(std::io::Error::other("stdin writer"))),
            }
        }
        read
    });
    let finished = outcome.and_then(|(stdout, stderr)| {
        let status = wait(&mut child).inspect_err(|_| kill(&mut child))?;
        Ok(Finished {
            status,
            stdout,
            stderr,
        })
    });
    finished.map_err(|e| match e {
        ChildError::TimedOut(_) => ChildError::TimedOut(started.elapsed()),
        e => e,
    })
}

/// A child that exits without reading all of its input closes the pipe: not an error.
fn write_all_tolerant(pipe: &mut impl Write, bytes: &[u8]) -> Result<(), ChildError> {
    match pipe.write_all(bytes) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Reads stdout (and stderr when piped) to their ends, waiting no longer than the deadline.
fn read_outputs(child: &mut Child) -> Result<(Vec<u8>, Vec<u8>), ChildError> {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 16 * 1024];
    while stdout.is_some() || stderr.is_some() {
        let left = deadline::remaining();
        if left.is_zero() {
            return Err(ChildError::TimedOut(Duration::ZERO));
        }
        let (out_ready, err_ready) = {
            let mut fds = Vec::with_capacity(2);
            if let Some(p) = &stdout {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            if let Some(p) = &stderr {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, poll_timeout(left)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            };
            match (&stdout, &stderr) {
                (Some(_), Some(_)) => (ready(0), ready(1)),
                (Some(_), None) => (ready(0), false),
                (None, _) => (false, ready(0)),
            }
        };
        if out_ready {
            if let Some(p) = &mut stdout {
                if read_some(p, &mut chunk, &mut out)? {
                    stdout = None;
                }
            }
        }
        if err_ready {
            if let Some(p) = &mut stderr {
                if read_some(p, &mut chunk, &mut err)? {
                    stderr = None;
                }
            }
        }
    }
    Ok((out, err))
}

/// One read; true at end of file.
fn read_some(
    pipe: &mut impl Read,
    chunk: &mut [u8],
    into: &mut Vec<u8>,
) -> Result<bool, ChildError> {
    match pipe.read(chunk) {
        Ok(0) => Ok(true),
        Ok(n) => {
            into.extend_from_slice(&chunk[..n]);
            Ok(false)
        }
        Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn poll_timeout(left: Duration) -> PollTimeout {
    // Rounded up, so that a wait of 0.4 ms is not a busy loop of zero-length polls.
    let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128);
    PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
}

/// Waits for a child whose outputs are closed. It exits at once in every sane case; one that
/// closed them and lives on is polled until the deadline, then killed.
fn wait(child: &mut Child) -> Result<ExitStatus, ChildError> {
    let mut pause = Duration::from_micros(50);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if deadline::expired() {
            return Err(ChildError::TimedOut(Duration::ZERO));
        }
        std::thread::sleep(deadline::capped(pause));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_a_large_input_to_a_child_that_answers_before_reading() {
        // 4 MB of output before reading 4 MB of input: a sequential write then read
        // deadlocks on the two full pipes.
        let input = vec![b'x'; 4 << 20];
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "head -c 4194304 /dev/zero; wc -c"]);
        let done = run(&mut cmd, &input, false).expect("runs");
        assert!(done.status.success());
        assert_eq!(done.stdout.len(), (4 << 20) + "4194304\n".len());
        assert!(done.stdout.ends_with(b"4194304\n"));
    }

    #[test]
    fn captures_stderr_apart_from_stdout() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; echo oops >&2; exit 3"]);
        let done = run(&mut cmd, b"hello", true).expect("runs");
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, b"hello");
        assert_eq!(done.stderr, b"oops\n");
    }

    #[test]
    fn kills_a_child_that_outlives_the_deadline() {
        deadline::arm(Duration::from_millis(300), None);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec sleep 30"]);
        let started = Instant::now();
        match run(&mut cmd, b"", false) {
            Err(ChildError::TimedOut(after)) => assert!(after >= Duration::from_millis(250)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
