//! What the two broker targets share: read packets from a fuzzed stream as rumqttd's network
//! link does, and check what every read must hold whatever the protocol version.

use bytes::BytesMut;
use rumqttd::protocol::{Error, Packet, Protocol};

/// mekong's default `broker.max_packet_bytes` (crates/ingest/src/broker.rs).
pub const MAX_PACKET_BYTES: usize = 256 * 1024;

/// Reads packets from `input` until the stream is used up or an error ends the connection,
/// as `Network::readv` does, and checks each read:
/// - a read that succeeds takes at least a fixed header's 2 bytes and no more than there
///   are, so a loop of reads always ends;
/// - "insufficient bytes" asks for at least one byte (a zero would make the link wait for
///   nothing, forever) and leaves the stream untouched, so that the read can be retried;
/// - a packet that is read, written back with the same protocol and read again, is the
///   same packet (when `round_trip` is set; see the callers for why not always).
pub fn read_all<P: Protocol>(protocol: &mut P, input: &[u8], round_trip: impl Fn(&Packet) -> bool) {
    let mut stream = BytesMut::from(input);
    loop {
        let before = stream.len();
        match protocol.read_mut(&mut stream, MAX_PACKET_BYTES) {
            Ok(packet) => {
                let taken = before - stream.len();
                assert!(taken >= 2, "a packet of {taken} bytes");
                if round_trip(&packet) {
                    let mut written = BytesMut::new();
                    if protocol.write(packet.clone(), &mut written).is_ok() {
                        let again = protocol.read_mut(&mut written, MAX_PACKET_BYTES);
                        assert_eq!(again.as_ref().ok(), Some(&packet), "{again:?}");
                        assert!(written.is_empty(), "{} bytes left after the packet", written.len());
                    }
                }
            }
            Err(Error::InsufficientBytes(n)) => {
                assert!(n >= 1);
                assert_eq!(stream.len(), before);
                return;
            }
            Err(_) => return,
        }
    }
}
