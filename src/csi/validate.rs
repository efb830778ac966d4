//! Request checks done before any backend is touched. Every failure names the proto field.

use crate::error::{Error, Result};
use crate::ops::SizeRange;
use crate::proto::{CapacityRange, VolumeCapability, volume_capability};

/// Longest CSI name accepted (bytes). Kubernetes names are far shorter (`pvc-<uuid>`,
/// `snapshot-<uuid>`); csi-sanity sends 128. 255 is what the clouds we speak store as a name.
pub const MAX_NAME_LEN: usize = 255;
/// Longest id accepted (bytes); longer ones are never ours.
pub const MAX_ID_LEN: usize = 1024;
/// Longest path accepted (bytes), PATH_MAX.
pub const MAX_PATH_LEN: usize = 4096;

/// A non-empty name within [`MAX_NAME_LEN`].
pub fn name<'a>(field: &'static str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long, the limit is {MAX_NAME_LEN}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value)
}

/// A non-empty id within [`MAX_ID_LEN`].
pub fn id<'a>(field: &'static str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long, the limit is {MAX_ID_LEN}", value.len()),
        ));
    }
    Ok(value)
}

/// A non-empty list of distinct ids (`source_volume_ids` of a group snapshot).
pub fn distinct_ids<'a>(field: &'static str, values: &'a [String]) -> Result<Vec<&'a str>> {
    if values.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        let value = id(field, value)?;
        if !seen.insert(value) {
            return Err(Error::invalid(field, format!("{value} is listed twice")));
        }
        out.push(value);
    }
    Ok(out)
}

/// A possibly empty list of ids, each valid (`snapshot_ids` of Get/DeleteVolumeGroupSnapshot).
pub fn ids<'a>(field: &'static str, values: &'a [String]) -> Result<Vec<&'a str>> {
    values.iter().map(|v| id(field, v)).collect()
}

/// A non-empty absolute-or-relative path within [`MAX_PATH_LEN`] with no NUL.
pub fn path<'a>(field: &'static str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_PATH_LEN || value.contains('\0') {
        return Err(Error::invalid(field, "is not a usable path"));
    }
    Ok(value)
}

/// `capacity_range` as a [`SizeRange`]; negative or inverted ranges are invalid.
pub fn capacity(range: Option<&CapacityRange>) -> Result<SizeRange> {
    let Some(range) = range else {
        return Ok(SizeRange::default());
    };
    let required = u64::try_from(range.required_bytes).map_err(|_| {
        Error::invalid(
            "capacity_range.required_bytes",
            format!("must not be negative, got {}", range.required_bytes),
        )
    })?;
    let limit = u64::try_from(range.limit_bytes).map_err(|_| {
        Error::invalid(
            "capacity_range.limit_bytes",
            format!("must not be negative, got {}", range.limit_bytes),
        )
    })?;
    if limit != 0 && required > limit {
        return Err(Error::OutOfRange(format!(
            "capacity_range: required_bytes {required} is larger than limit_bytes {limit}"
        )));
    }
    Ok(SizeRange { required, limit })
}

/// How a volume is accessed, from a validated capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Raw block device.
    Block,
    /// File system of this type (empty = driver default), with extra mount flags.
    Mount {
        /// `fs_type`.
        fs_type: String,
        /// `mount_flags`.
        flags: Vec<String>,
    },
}

/// File systems the node can create.
pub const FS_TYPES: [&str; 2] = ["ext4", "xfs"];

/// Checks one capability: a known access mode and an access type. Answers the access type
/// and whether the mode is one of the single-node modes this driver serves.
pub fn capability(field: &'static str, cap: &VolumeCapability) -> Result<(Access, bool)> {
    use volume_capability::access_mode::Mode;
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| Error::invalid(field, "access_mode is missing"))?;
    let mode = Mode::try_from(mode.mode)
        .map_err(|_| Error::invalid(field, format!("access_mode {} is unknown", mode.mode)))?;
    let single_node = match mode {
        Mode::Unknown => return Err(Error::invalid(field, "access_mode is UNKNOWN")),
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => true,
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter => {
            false
        }
    };
    let access = match &cap.access_type {
        None => {
            return Err(Error::invalid(
                field,
                "access_type (block or mount) is missing",
            ));
        }
        Some(volume_capability::AccessType::Block(_)) => Access::Block,
        Some(volume_capability::AccessType::Mount(mount)) => {
            if !mount.fs_type.is_empty() && !FS_TYPES.contains(&mount.fs_type.as_str()) {
                return Err(Error::invalid(
                    field,
                    format!(
                        "fs_type {:?} is not supported (supported: {})",
                        mount.fs_type,
                        FS_TYPES.join(", ")
                    ),
                ));
            }
            Access::Mount {
                fs_type: mount.fs_type.clone(),
                flags: mount.mount_flags.clone(),
            }
        }
    };
    Ok((access, single_node))
}

/// Checks a non-empty capability list; answers the checked capabilities.
pub fn capabilities(field: &'static str, caps: &[VolumeCapability]) -> Result<Vec<(Access, bool)>> {
    if caps.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    caps.iter().map(|c| capability(field, c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};

    fn mount_cap(mode: i32, fs: &str) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode }),
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn names_are_bounded() {
        assert!(name("name", &"a".repeat(128)).is_ok());
        let err = name("name", &"a".repeat(256)).expect_err("too long");
        assert!(err.to_string().starts_with("name:"));
        assert!(name("name", "").is_err());
        assert!(name("name", "a\nb").is_err());
    }

    #[test]
    fn capabilities_are_checked() {
        let ok = capability(
            "volume_capability",
            &mount_cap(Mode::SingleNodeWriter as i32, "xfs"),
        );
        assert!(ok.expect("valid").1);
        let unknown = capability("volume_capability", &mount_cap(99, ""));
        assert!(
            unknown
                .expect_err("bad mode")
                .to_string()
                .contains("unknown")
        );
        let fs = capability("volume_capability", &mount_cap(1, "zfs"));
        assert!(fs.expect_err("bad fs").to_string().contains("zfs"));
        let no_type = VolumeCapability {
            access_mode: Some(AccessMode { mode: 1 }),
            access_type: None,
        };
        assert!(capability("volume_capability", &no_type).is_err());
        assert!(capabilities("volume_capabilities", &[]).is_err());
    }

    #[test]
    fn group_id_lists() {
        let two = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            distinct_ids("source_volume_ids", &two).expect("ok"),
            ["a", "b"]
        );
        let twice = vec!["a".to_owned(), "a".to_owned()];
        let err = distinct_ids("source_volume_ids", &twice).expect_err("duplicate");
        assert_eq!(err.to_string(), "source_volume_ids: a is listed twice");
        let err = distinct_ids("source_volume_ids", &[]).expect_err("empty");
        assert_eq!(err.to_string(), "source_volume_ids: must not be empty");
        let blank = vec![String::new()];
        assert!(ids("snapshot_ids", &blank).is_err());
        assert!(ids("snapshot_ids", &[]).expect("empty is fine").is_empty());
    }

    #[test]
    fn capacity_ranges() {
        let bad = CapacityRange {
            required_bytes: -1,
            limit_bytes: 0,
        };
        assert_eq!(
            capacity(Some(&bad)).expect_err("negative").code(),
            tonic::Code::InvalidArgument
        );
        let inverted = CapacityRange {
            required_bytes: 10,
            limit_bytes: 5,
        };
        assert_eq!(
            capacity(Some(&inverted)).expect_err("inverted").code(),
            tonic::Code::OutOfRange
        );
    }
}
