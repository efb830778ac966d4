//! The SCP OpenAPI request signature.
//!
//! Facts from the public SCP SDK (issue 4): `Scp-Signature` is the Base64 (standard alphabet)
//! HMAC-SHA256, keyed with the secret key, of the concatenation — no separators — of the HTTP
//! method in upper case, the full request URL exactly as sent (`scheme://host/path?query`), the
//! `Scp-Timestamp` string (Unix milliseconds), the access key, the account id (empty when
//! none) and the client type (`Openapi`). The body is not covered, so only what is signed can
//! be checked by the service; a signature is accepted for 15 minutes.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `Scp-ClientType` every OpenAPI call carries.
pub const CLIENT_TYPE: &str = "Openapi";

/// What one signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SigningInput<'a> {
    /// HTTP method; upper-cased before signing.
    pub method: &'a str,
    /// The full URL as it goes on the wire.
    pub url: &'a str,
    /// `Scp-Timestamp`: Unix time in milliseconds, as a decimal string.
    pub timestamp: &'a str,
    /// `Scp-Accesskey`.
    pub access_key: &'a str,
    /// `Scp-AccountId`, or "" when the request carries none.
    pub account_id: &'a str,
    /// `Scp-ClientType`.
    pub client_type: &'a str,
}

/// `Scp-Signature` of `input` under `secret_key`.
pub fn sign(secret_key: &str, input: &SigningInput<'_>) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty key is still a key.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable_key(),
    };
    mac.update(input.method.to_ascii_uppercase().as_bytes());
    mac.update(input.url.as_bytes());
    mac.update(input.timestamp.as_bytes());
    mac.update(input.access_key.as_bytes());
    mac.update(input.account_id.as_bytes());
    mac.update(input.client_type.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cold]
fn unreachable_key() -> ! {
    // `Hmac::new_from_slice` only refuses keys for MACs with a fixed key size; HMAC has none.
    panic!("HMAC-SHA256 refused a key, which its definition does not allow")
}

/// Unix time in milliseconds, the `Scp-Timestamp` format.
pub fn timestamp_now() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    millis.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently of this code, with Python's hmac module:
    //   python3 -c 'import hmac,hashlib,base64,sys; print(base64.b64encode(hmac.new(
    //     SK.encode(), (METHOD+URL+TS+AK+ACCOUNT+"Openapi").encode(), hashlib.sha256
    //   ).digest()).decode())'
    // and the first one cross-checked with
    //   printf '%s' "$METHOD$URL$TS$AK$ACCOUNT"Openapi \
    //     | openssl dgst -sha256 -hmac "$SK" -binary | base64
    struct Vector {
        method: &'static str,
        url: &'static str,
        timestamp: &'static str,
        access_key: &'static str,
        account_id: &'static str,
        secret_key: &'static str,
        expected: &'static str,
    }

    const VECTORS: [Vector; 3] = [
        Vector {
            method: "GET",
            url: "https://virtualserver.kr-west1.e.samsungsdscloud.com/v1/snapshots?volume_id=3f500f00-ed80-4566-a057-e31760226f9a&limit=2",
            timestamp: "1605290625682",
            access_key: "2sd2gg=2agbdSD26svcD",
            account_id: "",
            secret_key: "s3cr3t-key/with+chars=",
            expected: "UPMNLcrFNijZAkbFe+fcBxlWcHWpE1E1G3KaPIDBKvE=",
        },
        Vector {
            method: "POST",
            url: "https://virtualserver.kr-west1.e.samsungsdscloud.com/v1/snapshots",
            timestamp: "1605290625682",
            access_key: "2sd2gg=2agbdSD26svcD",
            account_id: "acc-1234",
            secret_key: "s3cr3t-key/with+chars=",
            expected: "YrgOIORQh4sFwyX+NBAlVdXa28cH/1O3Xfiqa8oocBE=",
        },
        Vector {
            method: "DELETE",
            url: "http://127.0.0.1:8443/v1/volumes/760fee21-42b7-4717-adb7-511b31f8af74",
            timestamp: "1764032178000",
            access_key: "AK-test",
            account_id: "",
            secret_key: "SK-test",
            expected: "rwW2uoLzBcoIm1UA2fqI3HFizJ+BhO+xA43pcmNNqEo=",
        },
    ];

    fn input(v: &Vector) -> SigningInput<'_> {
        SigningInput {
            method: v.method,
            url: v.url,
            timestamp: v.timestamp,
            access_key: v.access_key,
            account_id: v.account_id,
            client_type: CLIENT_TYPE,
        }
    }

    #[test]
    fn matches_independently_computed_vectors() {
        for v in &VECTORS {
            assert_eq!(
                sign(v.secret_key, &input(v)),
                v.expected,
                "{} {}",
                v.method,
                v.url
            );
        }
    }

    #[test]
    fn method_is_upper_cased_and_every_part_counts() {
        let v = &VECTORS[0];
        let lower = SigningInput {
            method: "get",
            ..input(v)
        };
        assert_eq!(sign(v.secret_key, &lower), v.expected);
        let changed = [
            SigningInput {
                url: "https://virtualserver.kr-west1.e.samsungsdscloud.com/v1/snapshots?limit=2",
                ..input(v)
            },
            SigningInput {
                timestamp: "1605290625683",
                ..input(v)
            },
            SigningInput {
                access_key: "other",
                ..input(v)
            },
            SigningInput {
                account_id: "acc",
                ..input(v)
            },
            SigningInput {
                client_type: "Console",
                ..input(v)
            },
        ];
        for c in &changed {
            assert_ne!(sign(v.secret_key, c), v.expected, "{c:?}");
        }
        assert_ne!(sign("another secret", &input(v)), v.expected);
    }
}
