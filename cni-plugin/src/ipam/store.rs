//! host-local's on-disk store: `<dataDir>/<network>/<ip>` holds `<containerID>\r\n<ifname>`,
//! `last_reserved_ip.<set>` the last address handed out from range set `<set>`, and
//! `lock` is flock'ed for every change, so reference tools read and share it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{CniError, CniResult, code};

/// Prefix of a reservation being written (never an address, so host-local ignores it).
const TMP_PREFIX: &str = ".reserving-";

/// host-local's default data dir.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LOCK_FILE: &str = "lock";
const LAST_RESERVED: &str = "last_reserved_ip.";
const LINE_BREAK: &str = "\r\n";

/// The store of one network, locked for as long as it lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> CniError {
    move |e| CniError::new(code::IPAM, format!("{what}: {e}"))
}

/// One allocation on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The address (the file name).
    pub ip: IpAddr,
    /// The container ID.
    pub container_id: String,
    /// The interface name (empty for entries written by old host-local).
    pub ifname: String,
}

impl Store {
    /// Opens (creating it) `<data_dir>/<network>` and takes its lock.
    pub fn open(data_dir: &Path, network: &str) -> CniResult<Store> {
        let dir = data_dir.join(network);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_err(format!("create IPAM dir {}", dir.display())))?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o750)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| CniError::new(code::IPAM, format!("lock {}: {e}", path.display())))?;
        Ok(Store { dir, _lock: lock })
    }

    /// The network's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reserves `ip` for the container; false when the address is already taken.
    pub fn reserve(
        &self,
        ip: IpAddr,
        container_id: &str,
        ifname: &str,
        set: usize,
    ) -> CniResult<bool> {
        let path = self.dir.join(ip.to_string());
        // The file appears with its content or not at all: a plugin killed half-way must
        // never leave an empty reservation that no DEL can match to its container. The
        // content goes to a temporary file first, which is then linked into place (link
        // fails if the address is taken, like create_new).
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{ip}.{}", std::process::id()));
        let content = format!("{}{LINE_BREAK}{ifname}", container_id.trim());
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .and_then(|mut f| f.write_all(content.as_bytes()));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(format!("write {}", tmp.display()))(e));
        }
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err(format!("create {}", path.display()))(e)),
        }
        let last = self.dir.join(format!("{LAST_RESERVED}{set}"));
        if let Err(e) = fs::write(&last, ip.to_string()) {
            let _ = fs::remove_file(&path);
            return Err(io_err(format!("write {}", last.display()))(e));
        }
        Ok(true)
    }

    /// The last address reserved from range set `set`.
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// True when `ip` has a file.
    pub fn is_taken(&self, ip: IpAddr) -> bool {
        self.dir.join(ip.to_string()).exists()
    }

    /// Every allocation in the store.
    pub fn entries(&self) -> CniResult<Vec<Entry>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(io_err(format!("read {}", self.dir.display())))?;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            let Ok(content) = fs::read_to_string(e.path()) else {
                continue;
            };
            let (id, ifname) = match content.split_once(LINE_BREAK) {
                Some((id, ifname)) => (id.trim(), ifname.trim()),
                None => (content.trim(), ""),
            };
            out.push(Entry {
                ip,
                container_id: id.to_owned(),
                ifname: ifname.to_owned(),
            });
        }
        out.sort_by_key(|e| crate::cidr::to_u128(e.ip));
        Ok(out)
    }

    /// The addresses held by this container and interface.
    pub fn get_by_id(&self, container_id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.container_id == container_id.trim() && e.ifname == ifname)
            .map(|e| e.ip)
            .collect())
    }

    /// Removes one address's file (missing is fine).
    pub fn release(&self, ip: IpAddr) -> CniResult<()> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", path.display()))(e)),
        }
    }

    /// Releases every address held by this container and interface; returns them.
    pub fn release_by_id(&self, container_id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        // Temporary files of a writer killed mid-reserve (the caller holds the lock, so
        // no live writer owns one).
        if let Ok(dir) = fs::read_dir(&self.dir) {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let ips = self.get_by_id(container_id, ifname)?;
        for ip in &ips {
            self.release(*ip)?;
        }
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_host_local() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "net1").unwrap();
        let ip: IpAddr = "10.1.0.2".parse().unwrap();
        assert!(s.reserve(ip, "abc", "eth0", 0).unwrap());
        assert!(!s.reserve(ip, "other", "eth0", 0).unwrap());
        let dir = tmp.path().join("net1");
        assert_eq!(fs::read(dir.join("10.1.0.2")).unwrap(), b"abc\r\neth0");
        assert_eq!(
            fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
            "10.1.0.2"
        );
        assert!(dir.join("lock").exists());
        assert_eq!(s.last_reserved(0), Some(ip));
        assert_eq!(s.get_by_id("abc", "eth0").unwrap(), vec![ip]);
        assert!(s.get_by_id("abc", "eth1").unwrap().is_empty());
        assert_eq!(s.release_by_id("abc", "eth0").unwrap(), vec![ip]);
        assert!(!dir.join("10.1.0.2").exists());
        assert!(s.release_by_id("abc", "eth0").unwrap().is_empty());
    }
}
