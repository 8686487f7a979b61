//! Cairn's storage encoding: postcard, framed with a format byte and a CRC32 so that a
//! corrupt or foreign value on disk is detected when read back instead of being trusted.
//!
//! Frame: `[format: u8][crc32 of payload: u32 LE][payload]`.

use serde::{de::DeserializeOwned, Serialize};

/// Bumped when the framing or the postcard layout of a stored type changes incompatibly.
pub const FORMAT_V1: u8 = 1;
const HEADER_BYTES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stored value too short ({0} bytes)")]
    Truncated(usize),
    #[error("unknown storage format {0}")]
    UnknownFormat(u8),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("decode: {0}")]
    Decode(#[from] postcard::Error),
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let out = vec![0u8; HEADER_BYTES];
    let out = postcard::to_extend(value, out).expect("postcard encoding into a Vec cannot fail");
    seal(out)
}

/// Frames `payload` as [`encode`] frames a value's postcard bytes, whatever they are: for
/// the fuzz targets, which must get past the checksum to reach the decoding behind it.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    out.extend_from_slice(payload);
    seal(out)
}

/// Fills in the header of `out`, whose first [`HEADER_BYTES`] are reserved for it.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&out[HEADER_BYTES..]);
    out[0] = FORMAT_V1;
    out[1..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() < HEADER_BYTES {
        return Err(CodecError::Truncated(bytes.len()));
    }
    if bytes[0] != FORMAT_V1 {
        return Err(CodecError::UnknownFormat(bytes[0]));
    }
    let stored = u32::from_le_bytes(bytes[1..HEADER_BYTES].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_BYTES..];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    Ok(postcard::from_bytes(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_detected() {
        let value = (42u64, b"hello".to_vec());
        let mut bytes = encode(&value);
        assert_eq!(decode::<(u64, Vec<u8>)>(&bytes).unwrap(), value);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(
            decode::<(u64, Vec<u8>)>(&bytes),
            Err(CodecError::Checksum { .. })
        ));
        assert!(matches!(
            decode::<u64>(&bytes[..3]),
            Err(CodecError::Truncated(3))
        ));
    }

    #[test]
    fn a_framed_payload_is_what_encode_writes() {
        let value = (7u64, b"framed".to_vec());
        let encoded = encode(&value);
        assert_eq!(frame(&encoded[HEADER_BYTES..]), encoded);
    }
}
