//! What a peer frame's payload holds: the sender's proposer time, then a Raft message.
//!
//! Format (protocol version 2 of the transport's hello): `sender_time u64 LE | protobuf
//! raft::eraftpb::Message`. The time is the sender's proposer clock when the message left; a
//! leader caps the timestamps it proposes by the voters' times (`consensus::clock`), so that
//! one node's wrong clock cannot move ledger time.

use bulwark_ledger::Timestamp;
use protobuf::Message as _;
use raft::eraftpb::Message;

const TIME_BYTES: usize = 8;

/// A Raft message from a peer, with the time its sender stamped it with.
#[derive(Debug)]
pub struct PeerMessage {
    pub message: Message,
    pub sender_time: Timestamp,
}

/// The payload of a frame carrying `message`, sent at `sender_time`.
pub fn encode(message: &Message, sender_time: Timestamp) -> protobuf::ProtobufResult<Vec<u8>> {
    let mut payload = Vec::with_capacity(TIME_BYTES + message.compute_size() as usize);
    payload.extend_from_slice(&sender_time.0.to_le_bytes());
    message.write_to_vec(&mut payload)?;
    Ok(payload)
}

/// Decodes a peer's frame; frames that do not decode, or whose message names another sender
/// than the connection's, are dropped (the transport already checked their checksum, so this is
/// a peer of another version, or one lying about who it is).
pub fn decode(from: u64, payload: &[u8]) -> Option<PeerMessage> {
    let Some((time, body)) = payload.split_first_chunk::<TIME_BYTES>() else {
        tracing::warn!(from, "dropped a peer frame shorter than its time field");
        return None;
    };
    match Message::parse_from_bytes(body) {
        Ok(message) if message.from == from => Some(PeerMessage {
            message,
            sender_time: Timestamp(u64::from_le_bytes(*time)),
        }),
        Ok(message) => {
            tracing::warn!(
                from,
                claimed = message.from,
                "dropped a Raft message whose sender does not match its connection"
            );
            None
        }
        Err(e) => {
            tracing::warn!(from, error = %e, "dropped a peer frame that is not a Raft message");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_and_its_time_round_trip_and_a_forged_sender_is_dropped() {
        let message = Message {
            from: 2,
            to: 1,
            term: 7,
            ..Default::default()
        };
        let payload = encode(&message, Timestamp(123_456)).unwrap();
        let decoded = decode(2, &payload).expect("decodes");
        assert_eq!(decoded.message, message);
        assert_eq!(decoded.sender_time, Timestamp(123_456));
        assert!(decode(3, &payload).is_none(), "claims another sender");
        assert!(decode(2, &payload[..4]).is_none(), "shorter than the time");
    }
}
