//! From a rate and burst in bits to the TBF the reference plugin installs: the same
//! arithmetic, float truncations included, so a node can switch between the two binaries
//! and CHECK finds the other's qdiscs equal.

use shared::netlink::Tbf;

/// Microseconds per second (`netlink.TIME_UNITS_PER_SEC`).
const USEC_PER_SEC: f64 = 1_000_000.0;
/// The queueing latency the reference allows before dropping: 25 ms.
const LATENCY_USEC: f64 = 25_000.0;

/// Go's `uint32(f)` on amd64: through a signed 64-bit conversion, keeping the low 32 bits;
/// out-of-range values (infinity, ≥ 2^63) become 0. A huge burst over a small rate (the
/// runtimes pass 2^32−1 bits with annotations) wraps exactly as the reference's buffer does.
fn go_u32(value: f64) -> u32 {
    let limit = (1u64 << 63) as f64;
    if value.is_nan() || value >= limit || value < -limit {
        0
    } else {
        (value as i64) as u32
    }
}

/// The TBF for `rate_bits` per second with a bucket of `burst_bits`.
pub fn tbf(rate_bits: u64, burst_bits: u64, tick_in_usec: f64) -> Tbf {
    let rate = rate_bits / 8;
    // Validation keeps burst/8 below 2^32 - 1.
    let burst = (burst_bits / 8) as u32;
    let burst_usec = go_u32(f64::from(burst) * USEC_PER_SEC / rate as f64);
    let buffer = go_u32(f64::from(burst_usec) * tick_in_usec);
    let limit = go_u32(rate as f64 * LATENCY_USEC / USEC_PER_SEC).wrapping_add(burst);
    Tbf {
        rate,
        buffer,
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: f64 = 15.625;

    #[test]
    fn the_reference_test_vectors() {
        // ingressRate 8, burst 8 → 1 B/s, limit 1; egressRate 16, burst 8 → 2 B/s, limit 1.
        let ingress = tbf(8, 8, TICK);
        assert_eq!((ingress.rate, ingress.limit), (1, 1));
        assert_eq!(ingress.buffer, 15_625_000);
        let egress = tbf(16, 8, TICK);
        assert_eq!((egress.rate, egress.limit), (2, 1));
        assert_eq!(egress.buffer, 7_812_500);
    }

    #[test]
    fn ten_megabits_with_a_small_burst() {
        let t = tbf(10_000_000, 1_000_000, TICK);
        assert_eq!(t.rate, 1_250_000);
        // 125000 B at 1.25 MB/s = 100 ms = 1_562_500 ticks; limit 25 ms of rate + burst.
        assert_eq!(t.buffer, 1_562_500);
        assert_eq!(t.limit, 31_250 + 125_000);
    }

    #[test]
    fn the_runtime_burst_wraps_like_go() {
        // containerd: 10M with a burst of 2^32-1 bits.
        let t = tbf(10_000_000, u64::from(u32::MAX), TICK);
        assert_eq!(t.buffer, 2_415_919_079);
        assert_eq!(t.limit, 31_250 + 536_870_911);
    }

    #[test]
    fn a_rate_below_one_byte_does_not_divide_by_zero() {
        let t = tbf(7, 8, TICK);
        assert_eq!((t.rate, t.buffer, t.limit), (0, 0, 1));
    }
}
