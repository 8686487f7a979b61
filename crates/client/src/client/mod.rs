//! `Client`: the key-value calls. Every call goes through the one retry loop (`call.rs`).

mod call;

pub(crate) use call::Attempts;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::options::{
    CasOutcome, Consistency, DeleteOptions, Expectation, GetOptions, PutCondition, PutOptions,
    RangeOptions,
};
use crate::write_id::WriteIds;
use cairn_proto::kv::v1 as proto;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_proto::retry::Idempotency;
use cairn_types::{ClientId, REQUEST_BYTES_MAX_CEILING};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Largest message sent or received: the transport ceiling every cluster's
/// `request_bytes_max` fits under, so that a full range page is never refused by the codec.
pub(crate) const MESSAGE_BYTES_MAX: usize = REQUEST_BYTES_MAX_CEILING as usize;

/// A handle to a Cairn cluster. Cheap to clone; clones share connections and the write
/// id sequence, so one process should normally use one `Client` and clone it.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    gateways: Vec<Gateway>,
    /// Index into `gateways` of the one to try first: the last that answered.
    preferred: AtomicUsize,
    writes: WriteIds,
    /// The token for `config.credentials`, once authenticated.
    token: tokio::sync::Mutex<Option<crate::auth::Token>>,
}

#[derive(Debug)]
struct Gateway {
    address: String,
    channel: Channel,
}

/// The result of [`Client::scan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanResult {
    pub kvs: Vec<proto::KeyValue>,
    /// True when keys remain after the last one returned.
    pub more: bool,
    /// The continuation to resume after the last key returned, when `more`.
    pub continuation: Vec<u8>,
    /// The revision every page was read at (pass it with `continuation` to go on).
    pub revision: u64,
}

impl Client {
    /// Creates a client. Connections open lazily on first use, so this fails only on an
    /// invalid configuration or a malformed endpoint address, never because a gateway is
    /// down.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        config.validate()?;
        let tls = match &config.tls {
            None => cairn_tls::ClientTls::plaintext(),
            Some(tls) => tls.client()?,
        };
        let gateways = config
            .endpoints
            .iter()
            .map(|address| {
                if address.trim().starts_with("https://") && !tls.is_enabled() {
                    return Err(Error::InvalidArgument {
                        field: "endpoints".into(),
                        reason: format!(
                            "{address:?} is https:// but no TLS is configured (set tls: the CA \
                             file that signed the gateway's certificate)"
                        ),
                    });
                }
                let endpoint = endpoint(address)?
                    .connect_timeout(config.connect_timeout)
                    .tcp_nodelay(true);
                Ok(Gateway {
                    address: address.clone(),
                    channel: tls.connect_lazy(endpoint, None),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let client_id = WriteIds::random_client_id();
        tracing::debug!(%client_id, endpoints = ?config.endpoints, "cairn client created");
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                gateways,
                preferred: AtomicUsize::new(0),
                writes: WriteIds::new(client_id),
                token: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// This client's id, sent with every write.
    pub fn client_id(&self) -> ClientId {
        self.inner.writes.client_id()
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn token_cache(&self) -> &tokio::sync::Mutex<Option<crate::auth::Token>> {
        &self.inner.token
    }

    /// Writes `value` under `key`.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<proto::PutResponse> {
        self.put_with(key, value, PutOptions::default()).await
    }

    /// Writes `value` under `key`, optionally under a condition and returning the previous
    /// key. With a condition that does not hold, `succeeded` is false and nothing is written.
    pub async fn put_with(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<proto::PutResponse> {
        let write = self.inner.writes.begin();
        let message = proto::PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv: options.prev_kv,
            condition: options.condition.map(Into::into),
            write_id: Some(write.id().into()),
        };
        self.call("put", Idempotency::Idempotent, |channel, remaining| {
            let request = request(message.clone(), remaining);
            async move { kv(channel).put(request).await }
        })
        .await
    }

    /// Reads `key` (linearizable); `None` when it does not exist.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<proto::KeyValue>> {
        self.get_with(key, GetOptions::default()).await
    }

    pub async fn get_with(
        &self,
        key: impl Into<Vec<u8>>,
        options: GetOptions,
    ) -> Result<Option<proto::KeyValue>> {
        let message = proto::GetRequest {
            key: key.into(),
            consistency: proto::Consistency::from(options.consistency).into(),
            keys_only: options.keys_only,
            revision: options.revision,
        };
        let response = self
            .call("get", Idempotency::Idempotent, |channel, remaining| {
                let request = request(message.clone(), remaining);
                async move { kv(channel).get(request).await }
            })
            .await?;
        Ok(response.kv)
    }

    /// Deletes `key`; `deleted` is 0 when it did not exist.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<proto::DeleteResponse> {
        self.delete_with(key, DeleteOptions::default()).await
    }

    pub async fn delete_with(
        &self,
        key: impl Into<Vec<u8>>,
        options: DeleteOptions,
    ) -> Result<proto::DeleteResponse> {
        let write = self.inner.writes.begin();
        let message = proto::DeleteRequest {
            key: key.into(),
            prev_kv: options.prev_kv,
            write_id: Some(write.id().into()),
        };
        self.call("delete", Idempotency::Idempotent, |channel, remaining| {
            let request = request(message.clone(), remaining);
            async move { kv(channel).delete(request).await }
        })
        .await
    }

    /// One page of a range read. Pass `continuation` from a response with `more` to get the
    /// next page, or use [`Client::scan`] to follow pages.
    pub async fn range(&self, options: RangeOptions) -> Result<proto::RangeResponse> {
        let message = proto::RangeRequest::from(options);
        self.call("range", Idempotency::Idempotent, |channel, remaining| {
            let request = request(message.clone(), remaining);
            async move { kv(channel).range(request).await }
        })
        .await
    }

    /// Follows range pages from `options` until the range is done or `keys_max` keys were
    /// collected. `options.limit` is the page size (0 = the cluster's `range_keys_max`).
    /// Every page is read at the first page's revision (or `options.revision`), so the
    /// result is one snapshot of the range, however many pages it took. A serializable scan
    /// without a revision reads each page at each shard's latest.
    pub async fn scan(&self, mut options: RangeOptions, keys_max: usize) -> Result<ScanResult> {
        if options.count_only {
            return Err(Error::InvalidArgument {
                field: "count_only".into(),
                reason: "scan returns keys; count with range()".into(),
            });
        }
        let page_size = options.limit;
        let mut result = ScanResult::default();
        while result.kvs.len() < keys_max {
            let remaining = (keys_max - result.kvs.len()) as u64;
            options.limit = if page_size == 0 {
                remaining
            } else {
                page_size.min(remaining)
            };
            let page = self.range(options.clone()).await?;
            if options.consistency != Consistency::Serializable || options.revision != 0 {
                options.revision = page.revision;
            }
            result.revision = page.revision;
            let page_keys = page.kvs.len();
            result.kvs.extend(page.kvs);
            result.more = page.more;
            result.continuation = page.continuation;
            if !page.more {
                break;
            }
            // Every page but the last must make progress, which also bounds this loop by
            // keys_max pages.
            if page_keys == 0 || result.continuation.is_empty() {
                return Err(Error::Rejected {
                    code: tonic::Code::Internal,
                    message: "the gateway returned an unfinished range page without keys or \
                              continuation"
                        .into(),
                });
            }
            options.continuation = result.continuation.clone();
        }
        result.kvs.truncate(keys_max);
        Ok(result)
    }

    /// Moves the cluster's compaction point up to `revision`: reads below it fail with
    /// [`Error::Compacted`] from then on. Returns the compaction point in force.
    pub async fn compact(&self, revision: u64) -> Result<u64> {
        let message = proto::CompactRequest { revision };
        let response = self
            .call("compact", Idempotency::Idempotent, |channel, remaining| {
                let request = request(message, remaining);
                async move { kv(channel).compact(request).await }
            })
            .await?;
        Ok(response.compact_revision)
    }

    /// Every key beginning with `prefix`, read in pages of `page_size` keys (0 = the
    /// cluster's `range_keys_max`). Fails with `InvalidArgument { field: "keys_max" }` rather
    /// than return a partial list when the prefix holds more than `keys_max` keys.
    pub async fn scan_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
        page_size: u64,
        keys_max: usize,
    ) -> Result<Vec<proto::KeyValue>> {
        let options = RangeOptions {
            limit: page_size,
            ..RangeOptions::for_prefix(prefix)
        };
        let result = self.scan(options, keys_max).await?;
        if result.more {
            return Err(Error::InvalidArgument {
                field: "keys_max".into(),
                reason: format!(
                    "the prefix holds more than {keys_max} keys; raise keys_max or page with \
                     range()"
                ),
            });
        }
        Ok(result.kvs)
    }

    /// Writes `new_value` only if the key matches `expected`. Never fails because the key
    /// did not match: that is `succeeded == false`, with the key as it is in `current`.
    pub async fn compare_and_set(
        &self,
        key: impl Into<Vec<u8>>,
        expected: Expectation,
        new_value: impl Into<Vec<u8>>,
    ) -> Result<CasOutcome> {
        self.conditional_put(key.into(), new_value.into(), expected.into())
            .await
    }

    /// Writes `value` only if the key does not exist.
    pub async fn put_if_absent(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<CasOutcome> {
        self.conditional_put(key.into(), value.into(), PutCondition::Absent)
            .await
    }

    async fn conditional_put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        condition: PutCondition,
    ) -> Result<CasOutcome> {
        let options = PutOptions {
            prev_kv: true,
            condition: Some(condition),
        };
        let response = self.put_with(key.clone(), value.clone(), options).await?;
        Ok(CasOutcome::from_put(key, value, response))
    }

    /// Starts a write: its id, in flight until the guard drops.
    pub(crate) fn begin_write(&self) -> crate::write_id::PendingWrite<'_> {
        self.inner.writes.begin()
    }
}

/// Parses `host:port` (or `http://host:port`, or `https://host:port` when TLS is
/// configured) into an endpoint; a missing port is an error rather than a silent port 80.
/// The endpoint keeps the `http` scheme: TLS is the connector's business (cairn-tls).
fn endpoint(address: &str) -> Result<Endpoint> {
    let invalid = |reason: String| Error::InvalidArgument {
        field: "endpoints".into(),
        reason,
    };
    let trimmed = address.trim();
    let with_scheme = if trimmed.starts_with("http://") {
        trimmed.to_string()
    } else if let Some(rest) = trimmed.strip_prefix("https://") {
        format!("http://{rest}")
    } else if trimmed.contains("://") {
        return Err(invalid(format!(
            "{address:?}: only http:// and https:// gateways are supported"
        )));
    } else {
        format!("http://{trimmed}")
    };
    let endpoint = Endpoint::from_shared(with_scheme)
        .map_err(|error| invalid(format!("{address:?} is not a host:port address: {error}")))?;
    if endpoint.uri().port().is_none() || endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(invalid(format!(
            "{address:?} is not a host:port address (e.g. 127.0.0.1:7000)"
        )));
    }
    Ok(endpoint)
}

pub(crate) fn request<T>(message: T, remaining: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    // The gateway stops working on the request when the caller has given up on it.
    request.set_timeout(remaining);
    // The caller's trace continues in the gateway when it is sampled.
    cairn_trace_context::inject(request.metadata_mut());
    crate::auth::attach_token(&mut request);
    request
}

pub(crate) fn kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_need_host_and_port() {
        assert!(endpoint("127.0.0.1:7000").is_ok());
        assert!(endpoint("gateway.cairn.svc:7000").is_ok());
        assert!(endpoint("http://[::1]:7000").is_ok());
        // https:// is an endpoint; whether TLS is configured for it is `connect`'s check.
        assert!(endpoint("https://g:7000").is_ok());
        for bad in ["127.0.0.1", "ftp://g:7000", "not an address", ":7000", ""] {
            assert!(
                matches!(endpoint(bad), Err(Error::InvalidArgument { ref field, .. }) if field == "endpoints"),
                "{bad:?} was accepted"
            );
        }
    }

    #[tokio::test]
    async fn an_https_endpoint_needs_tls_configured() {
        let refused = Client::connect(ClientConfig::new(["https://127.0.0.1:7000"])).await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument { ref field, .. }) if field == "endpoints")
        );
    }

    #[tokio::test]
    async fn connect_is_lazy_and_rejects_malformed_addresses() {
        // Nothing listens here, and connect still succeeds: channels open on first use.
        let client = Client::connect(ClientConfig::new(["127.0.0.1:1"]))
            .await
            .expect("lazy connect");
        assert_ne!(client.client_id().get(), 0);
        let error = Client::connect(ClientConfig::new(["127.0.0.1"]))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::InvalidArgument { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn unreachable_gateways_are_reported_as_such() {
        let config = ClientConfig {
            retry_attempts_max: 3,
            retry_backoff_min: Duration::from_millis(1),
            retry_backoff_max: Duration::from_millis(5),
            ..ClientConfig::new(["127.0.0.1:1", "127.0.0.1:2"])
        };
        let client = Client::connect(config).await.expect("lazy connect");
        let error = client.get("k").await.unwrap_err();
        match &error {
            Error::Unavailable(message) => {
                assert!(
                    message.contains("cannot reach any gateway at 127.0.0.1:1,127.0.0.1:2"),
                    "{message}"
                )
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(error.is_retryable());
        // The failed write's sequence is no longer in flight.
        client.put("k", "v").await.unwrap_err();
        assert_eq!(client.inner.writes.first_incomplete().get(), 2);
    }
}
