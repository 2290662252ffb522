//! The subnet file (`/run/flannel/subnet.env`) that the CNI plugin and runtimes read.
//!
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16
//! FLANNEL_SUBNET=10.244.3.1/24
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=true
//! ```
//!
//! Written atomically: a temporary file in the same directory, synced, then renamed.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnetwork::Ipv4Network;

use crate::Error;

/// What the subnet file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetFile {
    /// The cluster network.
    pub network: Ipv4Network,
    /// This node's subnet (network address and prefix).
    pub subnet: Ipv4Network,
    /// MTU for pod interfaces.
    pub mtu: u32,
    /// Whether flanneld masquerades traffic leaving the cluster network.
    pub ip_masq: bool,
}

impl SubnetFile {
    /// The file's text. `FLANNEL_SUBNET` is the gateway (first) address with the prefix.
    pub fn render(&self) -> String {
        let gateway = Ipv4Addr::from(u32::from(self.subnet.network()) + 1);
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            gateway,
            self.subnet.prefix(),
            self.mtu,
            self.ip_masq
        )
    }

    /// Writes the file atomically, creating its directory.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let err = |source| Error::Io {
            what: format!("write subnet file {}", path.display()),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("subnet.env");
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }
}

/// The subnet named by an existing file's `FLANNEL_SUBNET`, if it has one that parses.
pub fn previous_subnet(text: &str) -> Option<Ipv4Network> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("FLANNEL_SUBNET="))?;
    let net: Ipv4Network = value.trim().parse().ok()?;
    Ipv4Network::new(net.network(), net.prefix()).ok()
}

/// Reads the previous subnet from the file at `path`, if any.
pub fn read_previous(path: &Path) -> Option<Ipv4Network> {
    previous_subnet(&std::fs::read_to_string(path).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_flannels_format() {
        let f = SubnetFile {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.3.0/24".parse().unwrap(),
            mtu: 1450,
            ip_masq: true,
        };
        assert_eq!(
            f.render(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        assert_eq!(previous_subnet(&f.render()), Some(f.subnet));
    }

    #[test]
    fn previous_subnet_ignores_garbage() {
        assert_eq!(previous_subnet("FLANNEL_SUBNET=nope\n"), None);
        assert_eq!(previous_subnet(""), None);
    }

    #[test]
    fn write_is_atomic_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/subnet.env");
        let f = SubnetFile {
            network: "10.5.0.0/16".parse().unwrap(),
            subnet: "10.5.9.0/24".parse().unwrap(),
            mtu: 1500,
            ip_masq: false,
        };
        f.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), f.render());
        assert_eq!(read_previous(&path), Some(f.subnet));
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }
}
