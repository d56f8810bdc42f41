//! `etcd_discovery_srv`: etcd's members found through DNS SRV records, as etcd's own client
//! finds them: `_etcd-client-ssl._tcp.<domain>` gives `https://` endpoints,
//! `_etcd-client._tcp.<domain>` `http://` ones, each `<target>:<port>`, in the order of
//! their priority (lowest first) and weight (highest first).
//!
//! The query is one UDP datagram to the node's resolver (the first `nameserver` of
//! `/etc/resolv.conf`, or [`NAMESERVER_ENV`]). Encoding a question and reading SRV answers
//! takes a page; the DNS crates that would do it bring async resolvers this process does not
//! need.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Overrides the resolver: `<ip>` or `<ip>:<port>`.
pub const NAMESERVER_ENV: &str = "CALICO_ETCD_DISCOVERY_NAMESERVER";

const RESOLV_CONF: &str = "/etc/resolv.conf";
const TIMEOUT: Duration = Duration::from_secs(2);
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SrvError {
    #[error("{0}")]
    Resolver(String),
    #[error("DNS query for {name} failed: {reason}")]
    Query { name: String, reason: String },
    #[error(
        "etcd_discovery_srv {domain:?}: no _etcd-client-ssl._tcp or _etcd-client._tcp SRV \
         records ({reasons})"
    )]
    NoRecords { domain: String, reasons: String },
}

/// One SRV answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The resolver to ask: `override_` when given, else resolv.conf's first nameserver.
pub fn nameserver(override_: Option<&str>) -> Result<SocketAddr, SrvError> {
    let text = match override_.map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => text.to_string(),
        None => {
            let conf = std::fs::read_to_string(RESOLV_CONF)
                .map_err(|e| SrvError::Resolver(format!("cannot read {RESOLV_CONF}: {e}")))?;
            conf.lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .map(str::trim)
                .next()
                .map(str::to_string)
                .ok_or_else(|| SrvError::Resolver(format!("{RESOLV_CONF} names no nameserver")))?
        }
    };
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| SrvError::Resolver(format!("nameserver {text:?} is not an address")))
}

/// The endpoints `domain` advertises: TLS ones first, as etcd lists them.
pub fn discover(domain: &str, resolver: SocketAddr) -> Result<Vec<String>, SrvError> {
    let domain = domain.trim().trim_end_matches('.');
    let mut endpoints = Vec::new();
    let mut reasons = Vec::new();
    for (service, scheme) in [("_etcd-client-ssl", "https"), ("_etcd-client", "http")] {
        let name = format!("{service}._tcp.{domain}");
        match lookup(&name, resolver) {
            Ok(records) if records.is_empty() => reasons.push(format!("{name}: none")),
            Ok(records) => endpoints.extend(
                records
                    .into_iter()
                    .map(|r| format!("{scheme}://{}:{}", r.target.trim_end_matches('.'), r.port)),
            ),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    if endpoints.is_empty() {
        return Err(SrvError::NoRecords {
            domain: domain.to_string(),
            reasons: reasons.join("; "),
        });
    }
    Ok(endpoints)
}

/// The SRV records of `name`, sorted by priority, then weight (highest first).
pub fn lookup(name: &str, resolver: SocketAddr) -> Result<Vec<Srv>, SrvError> {
    let failed = |reason: String| SrvError::Query {
        name: name.to_string(),
        reason,
    };
    let id = query_id();
    let query = encode_query(id, name).map_err(failed)?;
    let bind: SocketAddr = if resolver.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| failed("bind".into()))?
    } else {
        "[::]:0".parse().map_err(|_| failed("bind".into()))?
    };
    let socket = UdpSocket::bind(bind).map_err(|e| failed(e.to_string()))?;
    socket
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| failed(e.to_string()))?;
    socket
        .connect(resolver)
        .map_err(|e| failed(format!("{resolver}: {e}")))?;
    socket
        .send(&query)
        .map_err(|e| failed(format!("{resolver}: {e}")))?;
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .map_err(|e| failed(format!("{resolver}: no answer: {e}")))?;
        match decode_answer(id, &buf[..n]) {
            // Not the answer to this query (a late one to an earlier socket): wait on.
            Err(Decode::OtherId) => continue,
            Err(Decode::Bad(reason)) => return Err(failed(reason)),
            Ok(mut records) => {
                records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
                return Ok(records);
            }
        }
    }
}

fn query_id() -> u16 {
    // Not a security boundary (the resolver is the node's own); only tells answers apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}

/// A recursive query for the SRV records of `name`.
pub fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // recursion desired
    out.extend_from_slice(&1u16.to_be_bytes()); // one question
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a domain name"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&TYPE_SRV.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

enum Decode {
    OtherId,
    Bad(String),
}

fn bad(why: &str) -> Decode {
    Decode::Bad(why.to_string())
}

struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u16(&mut self) -> Result<u16, Decode> {
        let b = self
            .msg
            .get(self.at..self.at + 2)
            .ok_or_else(|| bad("truncated"))?;
        self.at += 2;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn skip(&mut self, n: usize) -> Result<(), Decode> {
        if self.at + n > self.msg.len() {
            return Err(bad("truncated"));
        }
        self.at += n;
        Ok(())
    }

    /// A (possibly compressed) name at the cursor; the cursor moves past it.
    fn name(&mut self) -> Result<String, Decode> {
        let (name, end) = read_name(self.msg, self.at)?;
        self.at = end;
        Ok(name)
    }
}

/// The name at `at`, and where the record continues after it. Compression pointers only
/// point backwards, and at most 64 are followed, so a hostile answer cannot loop.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), Decode> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(at).ok_or_else(|| bad("truncated name"))? as usize;
        match len {
            0 => {
                return Ok((labels.join("."), end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let low = *msg.get(at + 1).ok_or_else(|| bad("truncated pointer"))? as usize;
                let target = ((l & 0x3f) << 8) | low;
                if target >= at {
                    return Err(bad("forward compression pointer"));
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            l if l <= 63 => {
                let label = msg
                    .get(at + 1..at + 1 + l)
                    .ok_or_else(|| bad("truncated label"))?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                at += 1 + l;
            }
            _ => return Err(bad("bad label")),
        }
    }
    Err(bad("name too long"))
}

/// The SRV records of an answer to query `id`. NXDOMAIN is no records; other failure codes
/// are errors.
fn decode_answer(id: u16, msg: &[u8]) -> Result<Vec<Srv>, Decode> {
    let mut r = Reader { msg, at: 0 };
    if r.u16()? != id {
        return Err(Decode::OtherId);
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err(bad("not an answer"));
    }
    if flags & 0x0200 != 0 {
        return Err(bad(
            "the answer was truncated (more records than one datagram holds)",
        ));
    }
    match flags & 0x000f {
        0 => {}
        3 => return Ok(Vec::new()),
        code => return Err(Decode::Bad(format!("the resolver answered rcode {code}"))),
    }
    let questions = r.u16()?;
    let answers = r.u16()?;
    r.skip(4)?;
    for _ in 0..questions {
        r.name()?;
        r.skip(4)?;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        r.name()?;
        let rtype = r.u16()?;
        let _class = r.u16()?;
        r.skip(4)?;
        let len = r.u16()? as usize;
        let start = r.at;
        if rtype == TYPE_SRV {
            let priority = r.u16()?;
            let weight = r.u16()?;
            let port = r.u16()?;
            let target = r.name()?;
            records.push(Srv {
                priority,
                weight,
                port,
                target,
            });
        }
        r.at = start;
        r.skip(len)?;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a resolver sends it: the question echoed, the targets compressed
    /// against the question's domain.
    fn answer(id: u16, records: &[(u16, u16, u16, &str)]) -> Vec<u8> {
        let mut msg = encode_query(id, "_etcd-client._tcp.example.com").expect("query");
        msg[2] = 0x81;
        msg[3] = 0x80;
        msg[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for &(priority, weight, port, host) in records {
            msg.extend_from_slice(&[0xc0, 12]);
            msg.extend_from_slice(&TYPE_SRV.to_be_bytes());
            msg.extend_from_slice(&CLASS_IN.to_be_bytes());
            msg.extend_from_slice(&60u32.to_be_bytes());
            let mut rdata = Vec::new();
            for v in [priority, weight, port] {
                rdata.extend_from_slice(&v.to_be_bytes());
            }
            rdata.push(host.len() as u8);
            rdata.extend_from_slice(host.as_bytes());
            // "<host>.example.com" through a pointer to the question's "example.com".
            rdata.extend_from_slice(&[0xc0, 30]);
            msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            msg.extend_from_slice(&rdata);
        }
        msg
    }

    #[test]
    fn answers_decode_with_compressed_targets() {
        let msg = answer(7, &[(10, 5, 2379, "etcd-b"), (0, 1, 2380, "etcd-a")]);
        let got = decode_answer(7, &msg).ok().expect("decodes");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].target, "etcd-b.example.com");
        assert_eq!((got[1].priority, got[1].port), (0, 2380));
        assert!(matches!(decode_answer(8, &msg), Err(Decode::OtherId)));
    }

    #[test]
    fn hostile_answers_are_errors_not_loops_or_panics() {
        // An answer whose name points at itself.
        let mut looped = answer(1, &[]);
        looped[6..8].copy_from_slice(&1u16.to_be_bytes());
        let at = looped.len();
        looped.extend_from_slice(&[0xc0, at as u8, 0, 33, 0, 1, 0, 0, 0, 60, 0, 0]);
        assert!(decode_answer(1, &looped).is_err());
        let msg = answer(1, &[(0, 0, 2379, "a")]);
        for cut in 0..msg.len() {
            let _ = decode_answer(1, &msg[..cut]);
        }
        assert!(encode_query(1, "a..b").is_err());
    }

    #[test]
    fn the_nameserver_override_takes_an_address_with_or_without_port() {
        assert_eq!(
            nameserver(Some("127.0.0.9")).expect("ip"),
            "127.0.0.9:53".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            nameserver(Some("127.0.0.9:5353")).expect("ip:port"),
            "127.0.0.9:5353".parse::<SocketAddr>().expect("addr")
        );
        assert!(nameserver(Some("dns.example")).is_err());
    }
}
