//! How `cairnctl` shows shards without quorum and the outcome of an unsafe recovery: what
//! the survivor had, so that the operator knows which acknowledged writes may be gone.

use cairn_client::proto;
use serde_json::{json, Value};

/// One line per shard without quorum, for `cluster status`; `none` when every shard has it.
pub fn without_quorum_cell(shards: &[proto::ShardWithoutQuorum]) -> String {
    if shards.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = shards
        .iter()
        .map(|shard| {
            format!(
                "shard {} (voters {}, surviving {}, for {} s)",
                shard.shard_id,
                ids(&shard.voters),
                if shard.surviving_voters.is_empty() {
                    "none".to_string()
                } else {
                    ids(&shard.surviving_voters)
                },
                shard.lost_for_ms / 1_000
            )
        })
        .collect();
    format!(
        "{} NO QUORUM, NO WRITES: {} (docs/operations.md: cairnctl unsafe recover-shard)",
        shards.len(),
        list.join("; ")
    )
}

pub fn without_quorum_json(shards: &[proto::ShardWithoutQuorum]) -> Value {
    Value::Array(
        shards
            .iter()
            .map(|shard| {
                json!({
                    "shard_id": shard.shard_id,
                    "voters": shard.voters,
                    "surviving_voters": shard.surviving_voters,
                    "lost_for_ms": shard.lost_for_ms,
                })
            })
            .collect(),
    )
}

pub fn json(recovered: &proto::UnsafeRecoverShardResponse) -> Value {
    json!({
        "shard_id": recovered.shard_id,
        "from_node_id": recovered.from_node_id,
        "previous_voters": recovered.previous_voters,
        "last_log_index": recovered.last_log_index,
        "term": recovered.term,
        "committed_index": recovered.committed_index,
        "applied_index": recovered.applied_index,
        "revision": recovered.revision,
        "epoch": recovered.epoch,
    })
}

pub fn table(recovered: &proto::UnsafeRecoverShardResponse) -> String {
    format!(
        "shard {shard} recovered from node {from}: it is now the only voter (epoch {epoch}), and \
         the shard is re-replicated from it.\n\
         previous voters: {previous}\n\
         the survivor had: last log index {last}, term {term}, committed index {committed}, \
         applied index {applied}, revision {revision}.\n\
         MAY BE LOST: writes acknowledged by the lost replicas after log index {last} \
         (revisions above {revision} that the survivor never received).\n",
        shard = recovered.shard_id,
        from = recovered.from_node_id,
        epoch = recovered.epoch,
        previous = ids(&recovered.previous_voters),
        last = recovered.last_log_index,
        term = recovered.term,
        committed = recovered.committed_index,
        applied = recovered.applied_index,
        revision = recovered.revision,
    )
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recovery_says_what_may_be_lost() {
        let text = table(&proto::UnsafeRecoverShardResponse {
            shard_id: 3,
            from_node_id: 1,
            previous_voters: vec![1, 2, 4],
            last_log_index: 120,
            term: 4,
            committed_index: 118,
            applied_index: 118,
            revision: 9_000,
            epoch: 122,
        });
        assert!(text.contains("shard 3 recovered from node 1"), "{text}");
        assert!(text.contains("previous voters: 1,2,4"), "{text}");
        assert!(text.contains("after log index 120"), "{text}");
        assert!(text.contains("revisions above 9000"), "{text}");
    }

    #[test]
    fn shards_without_quorum_are_named() {
        assert_eq!(without_quorum_cell(&[]), "none");
        let cell = without_quorum_cell(&[proto::ShardWithoutQuorum {
            shard_id: 5,
            voters: vec![1, 2, 3],
            surviving_voters: vec![2],
            lost_for_ms: 12_500,
        }]);
        assert!(cell.starts_with("1 NO QUORUM"), "{cell}");
        assert!(
            cell.contains("shard 5 (voters 1,2,3, surviving 2, for 12 s)"),
            "{cell}"
        );
    }
}
