//! What the requests of several nouns share: `key=value` parameters and the volume capability.

use crate::proto as csi;

/// Parses one `--param key=value`.
pub(super) fn parse_param(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?}: expected key=value"))
}

/// A single-node-writer capability: block access, or a mounted file system.
pub(super) fn capability(block: bool) -> csi::VolumeCapability {
    use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode: 1 }),
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
    }
}

/// A size flag as CSI's signed byte count.
pub(super) fn bytes(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}
