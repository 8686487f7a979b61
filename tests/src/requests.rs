//! Request builders and response readers that cluster tests share: node-level requests,
//! write ids, error details, and plain HTTP for the metrics and health endpoints.

use cairn_proto::kv::v1 as kv;
use cairn_proto::node::v1 as node;
use cairn_types::ShardId;
use std::time::Duration;

/// How long `http_get` waits to connect, and then for the whole answer.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HTTP_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The target of a node-level request to `shard` (routing epoch not checked).
pub fn shard_target(shard: ShardId) -> node::ShardTarget {
    node::ShardTarget {
        shard_id: shard.0,
        epoch: 0,
    }
}

/// A node-level get of `key` on `shard` (routing epoch not checked).
pub fn shard_get(
    shard: ShardId,
    key: &[u8],
    consistency: kv::Consistency,
) -> node::ShardGetRequest {
    node::ShardGetRequest {
        target: Some(shard_target(shard)),
        request: Some(kv::GetRequest {
            key: key.to_vec(),
            consistency: consistency as i32,
            keys_only: false,
            revision: 0,
        }),
        own_start_ts: 0,
    }
}

/// Decodes the structured error detail of a status.
pub fn error_detail(status: &tonic::Status) -> Option<kv::error_detail::Kind> {
    cairn_proto::status::detail_of(status)
}

/// A fresh write id generator for one simulated client.
pub struct WriteIds {
    client_id: u64,
    next: u64,
}

impl WriteIds {
    pub fn new() -> Self {
        Self {
            client_id: rand::random::<u64>() | 1,
            next: 1,
        }
    }

    pub fn next_id(&mut self) -> kv::WriteId {
        let id = kv::WriteId {
            client_id: self.client_id,
            sequence: self.next,
            first_incomplete_sequence: self.next,
        };
        self.next += 1;
        id
    }
}

impl Default for WriteIds {
    fn default() -> Self {
        Self::new()
    }
}

/// A plain HTTP/1.1 GET (for /metrics and the health endpoints): status and body, or None
/// when the endpoint does not answer within a few seconds.
pub async fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        HTTP_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(address),
    )
    .await
    .ok()?
    .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(HTTP_ANSWER_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of one un-labelled series in a Prometheus exposition.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
