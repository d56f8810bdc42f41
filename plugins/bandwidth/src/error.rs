//! The plugin's one error type, mapped once to CNI codes.

use shared::spec::error::{CniError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum BandwidthError {
    /// Netns, netlink look-ups and the like: the shared mapping applies.
    #[error(transparent)]
    Shared(#[from] shared::Error),
    /// Limits that cannot be applied as given.
    #[error("{0}")]
    Config(String),
    #[error("must be called as chained plugin")]
    NotChained,
    /// The host side of the pod could not be found from prevResult (the main plugin must
    /// report the host veth without `sandbox`).
    #[error("{0}")]
    HostInterface(String),
    /// The kernel refused a qdisc, filter or the IFB device; `step` is the reference's
    /// wording ("create ingress qdisc", "add filter", ...).
    #[error("{step}: {source}")]
    TrafficControl {
        step: &'static str,
        #[source]
        source: shared::Error,
    },
    /// CHECK found the shaping differs from the configuration.
    #[error("{0}")]
    CheckFailed(String),
}

impl BandwidthError {
    pub fn tc(step: &'static str) -> impl FnOnce(shared::Error) -> BandwidthError {
        move |source| BandwidthError::TrafficControl { step, source }
    }
}

impl From<BandwidthError> for CniError {
    fn from(e: BandwidthError) -> CniError {
        let msg = e.to_string();
        match e {
            BandwidthError::Shared(inner) => inner.into(),
            BandwidthError::Config(_) => CniError::new(ErrorCode::InvalidNetworkConfig, msg)
                .with_details(
                    "ingressRate/egressRate are bits per second, ingressBurst/egressBurst bits; \
                     set both of a direction, burst below 4 GiB (32 Gibit)",
                ),
            BandwidthError::NotChained => CniError::new(ErrorCode::InvalidNetworkConfig, msg)
                .with_details("put bandwidth after the main plugin in a conflist"),
            BandwidthError::HostInterface(_) => CniError::new(ErrorCode::InvalidNetworkConfig, msg)
                .with_details(
                    "the main plugin must create a veth pair and list its host end \
                     (without sandbox) in its result",
                ),
            BandwidthError::TrafficControl { .. } => CniError::new(ErrorCode::TrafficControl, msg),
            BandwidthError::CheckFailed(_) => CniError::new(ErrorCode::CheckFailed, msg),
        }
    }
}
