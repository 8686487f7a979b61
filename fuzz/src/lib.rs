//! What Cairn's fuzz targets share: how an input picks the message it is read as, and the
//! checks every decoder must pass. The decoders themselves are the ones the servers run,
//! called through their crates' public functions; nothing here decodes on its own.
//!
//! A target that reads several kinds of message takes the first byte of its input as the
//! kind ([`split_kind`]) and the rest as the bytes on the wire. The seed generator
//! (tests/seeds.rs) writes its seeds the same way, with [`seed`].

use prost::Message;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

/// The kind byte and the message bytes of an input; `None` for an empty input.
pub fn split_kind(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(kind, rest)| (*kind, rest))
}

/// A seed input: `kind`, then `bytes`.
pub fn seed(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(1 + bytes.len());
    input.push(kind);
    input.extend_from_slice(bytes);
    input
}

/// Decodes `bytes` as the protobuf message `M`, as tonic does on receive; and checks that
/// what decoded encodes to bytes that decode to the same message.
pub fn decode_message<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let again =
        M::decode(message.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, message, "a protobuf message survives re-encoding");
    Some(message)
}

/// Checks that `value`, as the Raft transport encodes it (postcard), decodes back to a value
/// that encodes to the same bytes: re-encoding what was decoded is stable.
pub fn assert_payload_stable<T: Serialize + DeserializeOwned>(value: &T) {
    use cairn_raft::network::{decode_payload, encode_payload, ENCODING_POSTCARD};
    let encoded = encode_payload(value);
    let decoded: T =
        decode_payload(ENCODING_POSTCARD, &encoded).expect("an encoded payload decodes");
    assert_eq!(
        encode_payload(&decoded),
        encoded,
        "a payload re-encodes to the same bytes"
    );
}

/// The same for values stored with Cairn's storage codec (framed postcard).
pub fn assert_stored_stable<T: Serialize + DeserializeOwned>(value: &T) {
    use cairn_types::codec;
    let encoded = codec::encode(value);
    let decoded: T = codec::decode(&encoded).expect("an encoded value decodes");
    assert_eq!(
        codec::encode(&decoded),
        encoded,
        "a stored value re-encodes to the same bytes"
    );
}
