//! The console lines every board prints (identity, reports, status), written to any
//! `core::fmt::Write`, so both images print them byte for byte the same.
//!
//! `scripts/qemu_e2e.py` parses these lines (`acked`, `offline:`, the `Value` format of
//! `sample` and `packed`): a change of wording here is a change of that test's input.
//! Each function returns the writer's result; the boards ignore it, since a console that
//! cannot take a line has nowhere to report that.

use core::fmt::{self, Write};

use crate::node::Report;
use crate::outbox::OutboxStats;
use crate::provision::{ConfigError, Provision};
use crate::station::StationStats;

/// A reading's value as the console shows it: to the tenth (the sensors' resolution), then
/// the exact bits of the `f64` (what a test compares with the platform's copy). Formatting
/// an `f64` in decimal exactly would cost 10 KiB of flash (core's float printing).
#[derive(Debug, Clone, Copy)]
pub struct Value(pub f64);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0 * 10.0 + if self.0 < 0.0 { -0.5 } else { 0.5 }) as i64;
        let sign = if tenths < 0 { "-" } else { "" };
        let t = tenths.unsigned_abs();
        write!(f, "{sign}{}.{} ({:#018x})", t / 10, t % 10, self.0.to_bits())
    }
}

/// A sequence number as the console shows it (`-` when the platform sent none).
#[derive(Debug, Clone, Copy)]
pub struct Seq(pub Option<u64>);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("-"),
        }
    }
}

/// Why the node will not start: the config page's failure, then the halt line.
pub fn config_error(w: &mut impl Write, e: &ConfigError) -> fmt::Result {
    writeln!(w, "{}\nhalted: refusing to run without a valid config page", e.message())
}

/// The node's identity from its config page.
pub fn identity(w: &mut impl Write, p: &Provision<'_>) -> fmt::Result {
    writeln!(
        w,
        "device {} kind {} broker {}:{} periods air {} s water {} s traffic {} s",
        p.device_id,
        p.kind.as_str(),
        p.broker_host,
        p.broker_port,
        p.period_secs.air,
        p.period_secs.water,
        p.period_secs.traffic
    )
}

/// Where the node's and the station's state live, in bytes (`size_of_val` of each).
pub fn ram(w: &mut impl Write, node_bytes: usize, station_bytes: usize) -> fmt::Result {
    writeln!(w, "ram: node state {node_bytes} bytes, station {station_bytes} bytes (on the main stack)")
}

/// What the node did, at uptime `now` (ms).
pub fn report(w: &mut impl Write, now: u64, report: &Report) -> fmt::Result {
    match report {
        Report::Online => writeln!(w, "[{now}] online: connected and subscribed"),
        Report::Offline(why) => writeln!(w, "[{now}] offline: {why}"),
        Report::LoginRefused { code, retry_in_ms } => writeln!(
            w,
            "[{now}] offline: broker refused the login: bad credentials, re-provision the node \
             (CONNACK {code}; next try in {} s)",
            retry_in_ms / 1000
        ),
        Report::Published { id, seq, records, bytes, attempt } => {
            writeln!(w, "[{now}] published pack {id} seq {seq}: {records} readings, {bytes} bytes, attempt {attempt}")
        }
        Report::Acked { id, seq, hello: true, .. } => {
            writeln!(w, "[{now}] acked pack {id} seq {}: hello; clock set", Seq(*seq))
        }
        Report::Acked { id, seq, readings, up_to_ms, .. } => {
            writeln!(w, "[{now}] acked pack {id} seq {}: {readings} readings stored, up to {up_to_ms} ms", Seq(*seq))
        }
        Report::AckUnmatched => writeln!(w, "[{now}] ack for no pack in flight (late duplicate)"),
        Report::Refused { id: Some(id), seq: Some(seq), reason } => {
            writeln!(w, "[{now}] refused pack {id}: {reason} (seq {seq})")
        }
        Report::Refused { id: Some(id), seq: None, reason } => writeln!(w, "[{now}] refused pack {id}: {reason}"),
        Report::Refused { id: None, seq: Some(seq), reason } => {
            writeln!(w, "[{now}] refusal of seq {seq}, no pack in flight with it: {reason}")
        }
        Report::Refused { id: None, seq: None, reason } => {
            writeln!(w, "[{now}] refusal for no pack in flight: {reason}")
        }
        Report::BadDownlink => writeln!(w, "[{now}] bad downlink ignored"),
        Report::SeqStoreFailed => writeln!(w, "[{now}] sequence store failed"),
        Report::SendFailed => writeln!(w, "[{now}] pack could not be sealed"),
    }
}

/// The periodic status line: `backlog` is `Node::backlog` (queued samples, packs in flight),
/// `stack_peak` the board's measure of its peak stack, bytes.
pub fn status(
    w: &mut impl Write,
    now: u64,
    backlog: (usize, usize),
    o: &OutboxStats,
    s: &StationStats,
    stack_peak: usize,
) -> fmt::Result {
    let (queued, in_flight) = backlog;
    writeln!(
        w,
        "[{now}] status: queued {queued}, in flight {in_flight}, acked {} packs, dropped {}, refused {}, \
         resends {}; bad frames air {}/{} water {}/{} traffic {}/{}; stack peak {} bytes",
        o.acked_packs,
        o.dropped,
        o.refused_packs,
        o.resends,
        s.air.bad,
        s.air.good + s.air.bad,
        s.water.bad,
        s.water.good + s.water.bad,
        s.traffic.bad,
        s.traffic.good + s.traffic.bad,
        stack_peak,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapless::String;
    use std::format;

    #[test]
    fn value_rounds_to_tenths_and_shows_the_bits() {
        assert_eq!(format!("{}", Value(182.54)), format!("182.5 ({:#018x})", 182.54f64.to_bits()));
        assert_eq!(format!("{}", Value(-0.06)), format!("-0.1 ({:#018x})", (-0.06f64).to_bits()));
        assert_eq!(format!("{}", Value(0.0)), "0.0 (0x0000000000000000)");
    }

    #[test]
    fn seq_shows_a_dash_for_none() {
        assert_eq!(format!("{}", Seq(Some(42))), "42");
        assert_eq!(format!("{}", Seq(None)), "-");
    }

    #[test]
    fn report_lines_are_the_ones_the_e2e_test_parses() {
        let mut out: String<512> = String::new();
        report(&mut out, 7, &Report::Offline("no PINGRESP")).unwrap();
        report(&mut out, 8, &Report::Acked { id: 2, seq: None, hello: false, readings: 5, up_to_ms: 9 }).unwrap();
        report(&mut out, 9, &Report::Acked { id: 1, seq: Some(3), hello: true, readings: 0, up_to_ms: 0 }).unwrap();
        report(&mut out, 10, &Report::LoginRefused { code: 5, retry_in_ms: 40_000 }).unwrap();
        assert_eq!(
            out.as_str(),
            "[7] offline: no PINGRESP\n\
             [8] acked pack 2 seq -: 5 readings stored, up to 9 ms\n\
             [9] acked pack 1 seq 3: hello; clock set\n\
             [10] offline: broker refused the login: bad credentials, re-provision the node \
             (CONNACK 5; next try in 40 s)\n"
        );
    }
}
