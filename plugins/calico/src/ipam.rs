//! The delegated IPAM plugin, as this plugin runs it: the network configuration it gets on
//! stdin (ours, or ours rewritten: `usePodCidr` subnets, pool annotations), and CNI_ARGS with
//! `IgnoreUnknown=1` in front so that it accepts the Kubernetes keys it does not know.

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::PathBuf;

use shared::delegate;
use shared::spec::env::Command;
use shared::spec::result::CniResult;
use shared::spec::version::Version;

use crate::annotations::{host_networks, AddressSource};
use crate::CalicoError;

pub struct Ipam<'a> {
    plugin: String,
    path: &'a [PathBuf],
    args: String,
    stdin: Cow<'a, [u8]>,
    version: Version,
}

impl<'a> Ipam<'a> {
    pub fn new(
        plugin: &str,
        path: &'a [PathBuf],
        args_raw: &str,
        stdin: &'a [u8],
        version: Version,
    ) -> Ipam<'a> {
        let args = if args_raw.is_empty() {
            "IgnoreUnknown=1".to_string()
        } else {
            format!("IgnoreUnknown=1;{args_raw}")
        };
        Ipam {
            plugin: plugin.to_string(),
            path,
            args,
            stdin: Cow::Borrowed(stdin),
            version,
        }
    }

    /// From now on the plugin gets `stdin` instead of the original configuration.
    pub fn set_stdin(&mut self, stdin: Vec<u8>) {
        self.stdin = Cow::Owned(stdin);
    }

    pub fn stdin(&self) -> &[u8] {
        &self.stdin
    }

    pub fn add(&self) -> Result<CniResult, shared::Error> {
        self.add_with_args(&self.args)
    }

    /// ADD for one specific address (`IP=<address>` in CNI_ARGS, which calico-ipam honours).
    pub fn add_address(&self, ip: IpAddr) -> Result<CniResult, shared::Error> {
        self.add_with_args(&format!("{};IP={ip}", self.args))
    }

    fn add_with_args(&self, args: &str) -> Result<CniResult, shared::Error> {
        delegate::add(
            &self.plugin,
            self.path,
            &[("CNI_ARGS", args)],
            &self.stdin,
            self.version,
        )
    }

    /// DEL, CHECK, GC or STATUS.
    pub fn call(&self, command: Command) -> Result<(), shared::Error> {
        delegate::call(
            &self.plugin,
            self.path,
            command,
            &[("CNI_ARGS", &self.args)],
            &self.stdin,
        )
    }

    /// The pod's addresses from `source` (spec §3.1 step 5). With `ipAddrs` the plugin is
    /// asked once per address; when a later request fails, what the earlier ones took is
    /// given back before the error is returned.
    pub fn obtain(&self, source: &AddressSource) -> Result<CniResult, CalicoError> {
        match source {
            AddressSource::Ipam => Ok(self.add()?),
            AddressSource::IpamPerAddress(ips) => {
                let mut all = CniResult::default();
                for ip in ips {
                    match self.add_address(*ip) {
                        Ok(one) => {
                            all.ips.extend(one.ips);
                            all.routes.extend(one.routes);
                        }
                        Err(e) => {
                            if !all.ips.is_empty() {
                                if let Err(undo) = self.call(Command::Del) {
                                    log::error!("releasing the addresses taken so far: {undo}");
                                }
                            }
                            return Err(e.into());
                        }
                    }
                }
                Ok(all)
            }
            AddressSource::NoIpam(ips) => Ok(CniResult {
                ips: host_networks(ips)
                    .into_iter()
                    .map(|address| shared::spec::result::IpConfig {
                        address,
                        gateway: None,
                        interface: None,
                    })
                    .collect(),
                ..CniResult::default()
            }),
        }
    }

    /// Whether addresses from `source` are held by the IPAM plugin (and must be given back
    /// when ADD fails later).
    pub fn holds(source: &AddressSource) -> bool {
        !matches!(source, AddressSource::NoIpam(_))
    }
}
