//! A network namespace for one hub, joined to this one by two veth pairs,
//! so that the hub can be cut off from NATS while its peers still reach it:
//!
//! ```text
//!  host namespace                          namespace link-chaos-<pid>
//!  nats-server on 10.231.N.1 ── lcn<pid>h ═ lcn<pid>n ── 10.231.N.2  (NATS link: cut here)
//!  load tool  ─► 10.231.N.6 ─── lcp<pid>h ═ lcp<pid>n ── 10.231.N.6  hub --bind 10.231.N.6:0
//!                (10.231.N.5)                             (peer link: never cut)
//! ```
//!
//! The cut sets the namespace's end of the NATS veth down (the host end and
//! its address stay, so the hubs outside keep reaching nats-server on
//! 10.231.N.1); the heal sets it up. Everything is made with `ip`, needs
//! root, and is removed by [`Netns::remove`] (also on drop).

use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::process::Command;

/// A namespace and its two veth pairs.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    nats_host: String,
    nats_ns: String,
    peer_host: String,
    peer_ns: String,
    /// 10.231.N.1: nats-server listens here (host end of the NATS link).
    pub nats_addr: Ipv4Addr,
    /// 10.231.N.6: the hub in the namespace listens here.
    pub hub_addr: Ipv4Addr,
    removed: bool,
}

/// Runs `ip ARGS`; the error is its stderr.
async fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates the namespace and links, named after this process, on the
    /// first 10.231.N.0/29 (N in 1..=254) no interface here uses. Fails
    /// (with the reason) when not root or when `ip netns` does not work.
    pub async fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let used = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .await
            .map_err(|e| format!("ip -o -4 addr show: {e}"))?;
        let used = String::from_utf8_lossy(&used.stdout).into_owned();
        let n = (0..254u32)
            .map(|i| (pid + i) % 254 + 1)
            .find(|n| !used.contains(&format!(" 10.231.{n}.")))
            .ok_or("no free 10.231.N.0/29 subnet")?;
        let n = u8::try_from(n).map_err(|e| e.to_string())?;
        let mut ns = Self {
            name: format!("link-chaos-{pid}"),
            nats_host: format!("lcn{pid}h"),
            nats_ns: format!("lcn{pid}n"),
            peer_host: format!("lcp{pid}h"),
            peer_ns: format!("lcp{pid}n"),
            nats_addr: Ipv4Addr::new(10, 231, n, 1),
            hub_addr: Ipv4Addr::new(10, 231, n, 6),
            removed: true,
        };
        ip(&["netns", "add", &ns.name]).await?;
        ns.removed = false;
        let setup = ns.links(n).await;
        if let Err(e) = setup {
            ns.remove();
            return Err(e);
        }
        Ok(ns)
    }

    async fn links(&self, n: u8) -> Result<(), String> {
        let ns = self.name.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        for (host, inner, host_ip, ns_ip) in [
            (self.nats_host.as_str(), self.nats_ns.as_str(), 1, 2),
            (self.peer_host.as_str(), self.peer_ns.as_str(), 5, 6),
        ] {
            ip(&[
                "link", "add", host, "type", "veth", "peer", "name", inner, "netns", ns,
            ])
            .await?;
            let host_cidr = format!("10.231.{n}.{host_ip}/30");
            let ns_cidr = format!("10.231.{n}.{ns_ip}/30");
            ip(&["addr", "add", &host_cidr, "dev", host]).await?;
            ip(&["link", "set", host, "up"]).await?;
            ip(&["-n", ns, "addr", "add", &ns_cidr, "dev", inner]).await?;
            ip(&["-n", ns, "link", "set", inner, "up"]).await?;
        }
        Ok(())
    }

    /// Cuts the namespace off from NATS.
    pub async fn cut(&self) -> Result<(), String> {
        ip(&["-n", &self.name, "link", "set", &self.nats_ns, "down"]).await
    }

    /// Joins it again.
    pub async fn heal(&self) -> Result<(), String> {
        ip(&["-n", &self.name, "link", "set", &self.nats_ns, "up"]).await
    }

    /// Deletes the namespace and the host ends of the veths (deleting one
    /// end of a veth deletes both). Idempotent; errors are ignored (a link
    /// already gone with its namespace is no failure).
    pub fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        for args in [
            vec!["link", "del", self.nats_host.as_str()],
            vec!["link", "del", self.peer_host.as_str()],
            vec!["netns", "del", self.name.as_str()],
        ] {
            let _ = std::process::Command::new("ip")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}
