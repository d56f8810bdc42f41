//! A DNS responder on loopback for discovery tests: answers SRV questions for the names it
//! was given, NXDOMAIN for every other name. Written independently of the plugin's client
//! (no name compression here), so the two check each other.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// `(priority, weight, port, target)`.
pub type SrvRecord = (u16, u16, u16, String);

pub struct SrvResponder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SrvResponder {
    /// Serves `records` (name without the trailing dot → its records) on `127.0.0.1:<port>`.
    pub fn start(records: BTreeMap<String, Vec<SrvRecord>>) -> std::io::Result<SrvResponder> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = reply(&buf[..n], &records) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        Ok(SrvResponder {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SrvResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn encode_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The reply to one query; `None` for what is not a single-question query.
fn reply(query: &[u8], records: &BTreeMap<String, Vec<SrvRecord>>) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
        at += len;
    }
    let question_end = at + 4;
    let question = query.get(12..question_end)?;
    let name = labels.join(".");
    let found = records.get(&name);
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]);
    // A recursive answer; NXDOMAIN when the name is unknown.
    out.extend_from_slice(&[0x81, if found.is_some() { 0x80 } else { 0x83 }]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(found.map_or(0, Vec::len) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (priority, weight, port, target) in found.into_iter().flatten() {
        encode_name(&mut out, &name);
        out.extend_from_slice(&33u16.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&30u32.to_be_bytes());
        let mut rdata = Vec::new();
        for v in [priority, weight, port] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        encode_name(&mut rdata, target);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}
