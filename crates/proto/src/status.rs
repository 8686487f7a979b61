//! The structured detail of a Cairn status: every service puts one `cairn.kv.v1.ErrorDetail`
//! in the `details` bytes of the statuses it can say more about, and callers act on it, never
//! on the message text. These two functions are the only places that encode and decode it.

use crate::kv::v1::error_detail::Kind;
use crate::kv::v1::ErrorDetail;
use prost::Message;
use tonic::{Code, Status};

/// A status with `kind` as its structured detail.
pub fn with_detail(code: Code, message: impl Into<String>, kind: Kind) -> Status {
    let detail = ErrorDetail { kind: Some(kind) };
    Status::with_details(code, message, detail.encode_to_vec().into())
}

/// The decoded detail of `status`, if it carries one. Details that do not decode (another
/// sender's, or garbage) count as none, so the code decides.
pub fn detail_of(status: &Status) -> Option<Kind> {
    if status.details().is_empty() {
        return None;
    }
    ErrorDetail::decode(status.details()).ok()?.kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::v1 as kv;

    #[test]
    fn a_detail_survives_the_round_trip() {
        let kind = Kind::UnknownShard(kv::UnknownShard { shard_id: 4 });
        let status = with_detail(Code::NotFound, "gone", kind.clone());
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(detail_of(&status), Some(kind));
    }

    #[test]
    fn no_or_garbage_details_are_none() {
        assert_eq!(detail_of(&Status::unavailable("m")), None);
        let garbage = Status::with_details(Code::Internal, "m", vec![0xff, 0xff, 0xff].into());
        assert_eq!(detail_of(&garbage), None);
    }
}
