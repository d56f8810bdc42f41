//! Reading the small files a configuration points at (an MTU file, a node name file, a
//! kubeconfig, a token): regular files only, with a size cap. And opening the state files a
//! plugin keeps for itself (locks, reservations, spares): never through what someone else
//! put in their place.
//!
//! Why: the path comes from a config or from another component, and what is there may be a
//! FIFO (opening it blocks until someone writes: the plugin hangs), a device (`/dev/zero`
//! reads for ever), or a file far larger than any sane content. Each is refused at once
//! with a message that says what was found.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Opens `path` for reading without blocking on a FIFO, and refuses anything but a regular
/// file no larger than `max` bytes. Links are followed: kubeconfigs and tokens are usually
/// mounted through them.
pub fn open_regular(path: &Path, max: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", kind_of(&meta.file_type())),
        ));
    }
    if meta.len() > max {
        return Err(too_large(max));
    }
    Ok(file)
}

/// The whole of a regular file of at most `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path, max)?;
    let mut bytes = Vec::new();
    // The file may grow between the check and the read: read one byte more than allowed to
    // tell.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(bytes)
}

/// [`read_regular`] as text; bytes that are not UTF-8 are an error.
pub fn read_regular_text(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, max)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// Opens (creating it with `mode`) a state file of ours for reading and writing. What is
/// in its place and is not ours is removed and the file made anew: a symbolic link (we
/// would write through it), a FIFO or a device (opening or reading it would block, or never
/// end), a file another user owns (they could hold its lock, or rewrite it). A file of ours
/// wider than `mode` (an earlier version's, or made under a permissive umask) is narrowed.
pub fn open_own(path: &Path, mode: u32, truncate: bool) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .mode(mode)
            .custom_flags(
                (nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_NONBLOCK
                    | nix::fcntl::OFlag::O_CLOEXEC)
                    .bits(),
            )
            .open(path)
    };
    let replace = |what: &str| -> io::Result<File> {
        log::warn!(
            "{}: {what} in place of a state file; replacing it",
            path.display()
        );
        std::fs::remove_file(path)?;
        open()
    };
    let file = match open() {
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            replace("a symbolic link")?
        }
        // A FIFO with no reader refuses a non-blocking open for writing.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENXIO as i32) => replace("a FIFO")?,
        other => other?,
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        drop(file);
        return replace("not a regular file");
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        drop(file);
        return replace("a file of another user");
    }
    if meta.mode() & 0o777 & !mode != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(file)
}

fn too_large(max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("it is larger than {max} bytes"),
    )
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("mtu");
        std::fs::write(&file, "1440\n").expect("write");
        assert_eq!(read_regular_text(&file, 16).expect("read"), "1440\n");
        let err = read_regular(&file, 3).expect_err("too large");
        assert!(err.to_string().contains("larger than 3 bytes"), "{err}");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = read_regular(&fifo, 16).expect_err("a FIFO");
        assert!(err.to_string().contains("a FIFO"), "{err}");

        let err = read_regular(Path::new("/dev/zero"), 16).expect_err("a device");
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_regular(dir.path(), 16).expect_err("a directory");
        assert!(err.to_string().contains("a directory"), "{err}");
        let err = read_regular(&dir.path().join("none"), 16).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn state_files_are_never_opened_through_what_was_planted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path| std::fs::symlink_metadata(p).expect("stat").mode();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        let victim_mode = mode(&victim);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666))
            .expect("mkfifo");
        let wide = dir.path().join("wide");
        std::fs::write(&wide, "mine").expect("wide");
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        for path in [&link, &fifo, &wide] {
            drop(open_own(path, 0o600, false).expect("opened"));
            let meta = std::fs::symlink_metadata(path).expect("stat");
            assert!(meta.is_file(), "{}: a regular file of ours", path.display());
            assert_eq!(meta.mode() & 0o777, 0o600, "{}", path.display());
        }
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        assert_eq!(mode(&victim), victim_mode, "the link's target is untouched");
        assert_eq!(
            std::fs::read_to_string(&wide).expect("wide"),
            "mine",
            "kept, narrowed"
        );
    }
}
