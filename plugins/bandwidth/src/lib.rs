//! The bandwidth plugin: shapes a pod's traffic on the host end of its veth.
//!
//! - Traffic to the pod (`ingressRate`): a TBF as the root qdisc of the host veth, whose
//!   egress is the pod's ingress.
//! - Traffic from the pod (`egressRate`): a qdisc cannot shape what a device receives, so an
//!   ingress qdisc on the host veth redirects every packet to an IFB device (`bwp` + hash),
//!   whose egress has the TBF.
//!
//! Everything is netlink from the namespace the plugin runs in (the host's); the container's
//! namespace is only read, to find the veth peer. DEL deletes the IFB (with its qdisc); the
//! host veth's qdiscs go with the veth.

pub mod config;
mod error;
mod host;
mod ifb;
pub mod shaping;

use std::collections::HashSet;

use shared::netlink::{format_mac, tick_in_usec, Handle, Link, Tbf};
use shared::skel::{Attachment, Plugin, Released, Request};
use shared::spec::config::BandwidthLimits;
use shared::spec::result::{CniResult, Interface};

use config::BandwidthConf;

pub use error::BandwidthError;
pub use ifb::ifb_name;

pub struct Bandwidth;

type Req<'a> = Request<'a, BandwidthConf>;

/// The limits of a request (config or capability), validated.
fn requested_limits(req: &Req) -> Result<Option<BandwidthLimits>, BandwidthError> {
    config::limits(req.config, req.conf.runtime_config.bandwidth.as_ref())
}

fn container_netns(req: &Req) -> Result<std::path::PathBuf, BandwidthError> {
    req.env.netns.clone().ok_or_else(|| {
        BandwidthError::HostInterface("CNI_NETNS is needed to find the pod's veth".into())
    })
}

/// Creates the IFB, redirects the host veth's ingress to it and shapes its egress. Returns
/// the IFB for the result. On failure the IFB is deleted again, so a retried ADD can start
/// over (the reference leaves it behind and then fails with "file exists" forever).
fn shape_egress(
    host: &mut Handle,
    veth: &Link,
    name: &str,
    tbf: &Tbf,
) -> Result<Link, BandwidthError> {
    host.create_ifb(name, veth.mtu)
        .map_err(BandwidthError::tc("adding link"))?;
    let result = (|| {
        let ifb = host
            .link_by_name(name)?
            .ok_or_else(|| BandwidthError::TrafficControl {
                step: "get ifb device",
                source: shared::Error::InvalidConfig(format!("{name} vanished after creation")),
            })?;
        host.add_ingress_qdisc(veth.index)
            .map_err(BandwidthError::tc("create ingress qdisc"))?;
        host.add_redirect_filter(veth.index, ifb.index)
            .map_err(BandwidthError::tc("add filter"))?;
        host.add_tbf(ifb.index, tbf)
            .map_err(BandwidthError::tc("create ifb qdisc"))?;
        Ok(ifb)
    })();
    if result.is_err() {
        if let Err(e) = host.delete_link_by_name(name) {
            log::warn!("could not remove {name} after a failed ADD: {e}");
        }
    }
    result
}

/// Compares the TBF at the root of `link` with the one the limits ask for.
fn check_tbf(host: &mut Handle, link: &Link, want: &Tbf) -> Result<(), BandwidthError> {
    let qdiscs = host.qdiscs(link.index)?;
    let found = qdiscs
        .iter()
        .find(|q| q.kind == "tbf" && q.parent == u32::MAX)
        .and_then(|q| q.tbf)
        .ok_or_else(|| {
            BandwidthError::CheckFailed(format!("Failed to find qdisc on {}", link.name))
        })?;
    let differs = |what: &str, got: u64, want: u64| {
        BandwidthError::CheckFailed(format!(
            "{what} doesn't match on {}: {got}, configured {want}",
            link.name
        ))
    };
    if found.rate != want.rate {
        return Err(differs("Rate", found.rate, want.rate));
    }
    if found.limit != want.limit {
        return Err(differs("Limit", found.limit.into(), want.limit.into()));
    }
    if found.buffer != want.buffer {
        return Err(differs("Buffer", found.buffer.into(), want.buffer.into()));
    }
    Ok(())
}

impl Plugin for Bandwidth {
    type Config = BandwidthConf;
    type Error = BandwidthError;

    fn name(&self) -> &'static str {
        "bandwidth"
    }

    /// A chained plugin needs a `prevResult`: 0.3.0 on, as the reference's.
    fn supported_versions(&self) -> &'static [shared::spec::version::Version] {
        &shared::spec::version::Version::CHAINING
    }

    fn add(&self, req: &Req) -> Result<CniResult, BandwidthError> {
        let limits = requested_limits(req)?;
        let Some(limits) = limits.filter(config::shapes_anything) else {
            // Nothing to shape: pass the previous result on (or an empty one, where the
            // reference crashes).
            return Ok(req.prev_result.clone().unwrap_or_default());
        };
        let mut result = req.prev_result.clone().ok_or(BandwidthError::NotChained)?;
        let mut host = Handle::new()?;
        let veth = host::host_interface(
            &mut host,
            &result.interfaces,
            &container_netns(req)?,
            &req.env.ifname,
        )?;
        let tick = tick_in_usec();
        if config::shapes(limits.ingress_rate, limits.ingress_burst) {
            let tbf = shaping::tbf(limits.ingress_rate, limits.ingress_burst, tick);
            host.add_tbf(veth.index, &tbf)
                .map_err(BandwidthError::tc("create ingress qdisc"))?;
        }
        if config::shapes(limits.egress_rate, limits.egress_burst) {
            let tbf = shaping::tbf(limits.egress_rate, limits.egress_burst, tick);
            let name = ifb_name(&req.conf.name, &req.env.container_id);
            let ifb = shape_egress(&mut host, &veth, &name, &tbf)?;
            result.interfaces.push(Interface {
                name,
                mac: ifb.mac.as_ref().map(format_mac).unwrap_or_default(),
                ..Interface::default()
            });
        }
        Ok(result)
    }

    fn del(&self, req: &Req) -> Result<Released, BandwidthError> {
        // Only the name is needed: limits that ADD refused must not stop the runtime's DEL
        // chain (the reference validates them here, and strands the pod).
        let name = ifb_name(&req.conf.name, &req.env.container_id);
        if Handle::new()?.delete_link_by_name(&name)? {
            return Ok(Released::of(format!(
                "ifb device {name} (the pod's egress shaping)"
            )));
        }
        Ok(Released::nothing())
    }

    fn check(&self, req: &Req) -> Result<(), BandwidthError> {
        let limits = requested_limits(req)?;
        let prev = req.prev_result.as_ref().ok_or(BandwidthError::NotChained)?;
        let mut host = Handle::new()?;
        let veth = host::host_interface(
            &mut host,
            &prev.interfaces,
            &container_netns(req)?,
            &req.env.ifname,
        )?;
        // The reference crashes here without limits (plugins#1221): nothing to check.
        let Some(limits) = limits else {
            return Ok(());
        };
        let tick = tick_in_usec();
        if config::shapes(limits.ingress_rate, limits.ingress_burst) {
            let want = shaping::tbf(limits.ingress_rate, limits.ingress_burst, tick);
            check_tbf(&mut host, &veth, &want)?;
        }
        if config::shapes(limits.egress_rate, limits.egress_burst) {
            let want = shaping::tbf(limits.egress_rate, limits.egress_burst, tick);
            let name = ifb_name(&req.conf.name, &req.env.container_id);
            let ifb = host.link_by_name(&name)?.ok_or_else(|| {
                BandwidthError::CheckFailed(format!("get ifb device: {name}: Link not found"))
            })?;
            check_tbf(&mut host, &ifb, &want)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Req, valid: &[Attachment]) -> Result<(), BandwidthError> {
        let keep: HashSet<String> = valid
            .iter()
            .map(|a| ifb_name(&req.conf.name, &a.container_id))
            .collect();
        let mut host = Handle::new()?;
        for link in host.links()? {
            let ours = link.kind.as_deref() == Some("ifb") && ifb::is_ifb_name(&link.name);
            if ours && !keep.contains(&link.name) {
                log::info!("gc: deleting {} (no valid attachment)", link.name);
                host.delete_link_by_name(&link.name)?;
            }
        }
        Ok(())
    }
}
