//! Builders shared by the transaction modules' unit tests.

use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::request_op::Request;

pub fn put(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Put(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv: true,
            ..Default::default()
        })),
    }
}

pub fn delete(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Delete(pb::DeleteRequest {
            key: key.into(),
            prev_kv: true,
            ..Default::default()
        })),
    }
}

pub fn get(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Get(pb::GetRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

pub fn range(start: &str, end: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Range(pb::RangeRequest {
            start: start.into(),
            end: end.into(),
            ..Default::default()
        })),
    }
}

pub fn compare_version(key: &str, version: u64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::Result::Equal as i32,
        key: key.into(),
        target: Some(pb::compare::Target::Version(version)),
    }
}

pub fn compare_value(key: &str, value: &str) -> pb::Compare {
    pb::Compare {
        result: pb::compare::Result::Equal as i32,
        key: key.into(),
        target: Some(pb::compare::Target::Value(value.into())),
    }
}

pub fn kv(key: &str, value: &str, mod_revision: u64, version: u64) -> pb::KeyValue {
    pb::KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: mod_revision.saturating_sub(version.saturating_sub(1)),
        mod_revision,
        version,
    }
}
