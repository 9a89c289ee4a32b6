//! Which stream shard a message belongs to. A shard is the unit of ordering (one consumer
//! applies it at a time, in order) and of progress (one checkpoint per version and shard).

use sha2::{Digest, Sha256};

/// The shard of an aggregate: the first four bytes of SHA-256(aggregate_id), big-endian,
/// modulo `shards`. The SQL function `herald_shard(text, int)` (migration V3) computes the
/// same value, so one shard can be read straight from the event store.
pub fn shard_of(aggregate_id: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(aggregate_id.as_bytes());
    let prefix = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    prefix % shards.max(1)
}

/// The `projection` name of a read-model version in `projection_checkpoints`.
pub fn projection_name(version: i32) -> String {
    format!("read_model_v{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_the_sha256_prefix_modulo_n() {
        // sha256("abc") starts ba7816bf = 3128432319; mod 4 = 3, mod 7 = 3128432319 % 7.
        assert_eq!(shard_of("abc", 4), 3);
        assert_eq!(shard_of("abc", 7), (3_128_432_319u64 % 7) as u32);
        assert_eq!(shard_of("abc", 1), 0);
        let spread: std::collections::BTreeSet<u32> = (0..200)
            .map(|i| shard_of(&format!("message-{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
