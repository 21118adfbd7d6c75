//! Fuzzes the firmware's MQTT 3.1.1 codec (`mekong_node::mqtt::codec`): `parse_header` and
//! `parse`, which a node runs on whatever bytes arrive from the broker.
//!
//! Properties: no panic; a parsed packet's length is within the input and agrees with its
//! fixed header, and its topic and payload lie within it; every shorter prefix of a packet
//! that parses is "need more", never an error or another packet (the node parses as bytes
//! trickle in); and where the codec has an encoder (PUBLISH at QoS 0 and 1, PUBACK) the
//! packet encodes again to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_node::mqtt::codec::{self, Packet};

fn within(input: &[u8], s: &[u8]) -> bool {
    let (start, end) = (input.as_ptr() as usize, input.as_ptr() as usize + input.len());
    s.is_empty() || (s.as_ptr() as usize >= start && s.as_ptr() as usize + s.len() <= end)
}

fuzz_target!(|input: &[u8]| {
    let header = codec::parse_header(input);
    let Ok(Some((packet, len))) = codec::parse(input) else { return };
    let header = header.expect("parse read a header").expect("a whole header");
    assert_eq!(len, header.total());
    assert!(len <= input.len());
    let bytes = &input[..len];
    for cut in 0..len {
        assert_eq!(codec::parse(&bytes[..cut]), Ok(None), "cut at {cut}");
    }
    match packet {
        Packet::Publish { topic, qos, pid, payload } => {
            assert!(within(bytes, topic.as_bytes()) && within(bytes, payload));
            assert!(qos <= 2);
            assert_eq!(pid.is_some(), qos > 0);
            // The encoder writes the shortest remaining length, no DUP or RETAIN, and QoS
            // 0 or 1: compare only inputs written that way.
            if qos < 2 && header.flags & 0b1001 == 0 {
                let mut out = vec![0u8; 16 + topic.len()];
                if let Ok(n) = codec::publish_header(&mut out, topic, pid, payload.len()) {
                    let canonical = n + payload.len() == len;
                    if canonical {
                        assert_eq!(&out[..n], &bytes[..n]);
                        assert_eq!(&bytes[n..], payload);
                    }
                }
            }
        }
        Packet::PubAck(pid) if header.header_len == 2 && header.flags == 0 => {
            assert_eq!(codec::puback(pid), bytes);
        }
        Packet::ConnAck { .. } | Packet::PubAck(_) | Packet::SubAck { .. } | Packet::PingResp | Packet::Other(_) => {}
    }
});
