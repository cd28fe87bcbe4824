//! Internal authentication (SPEC section 3): the decision, which
//! `crate::route_guard` applies in front of every `/internal/` route.
//!
//! The header is `Authorization: <base64 of the password>` with no scheme
//! word, as the original backend's operator tooling sends it. The password
//! file's content is accepted as is, and with one trailing newline removed
//! (files written by `echo` end in one). Comparison is constant-time.
//!
//! An empty password is no password (SPEC 3): the configuration already
//! turns an empty file into [`AuthConfig::Unavailable`], and [`check`]
//! refuses an empty password once more, so that an empty (or absent)
//! header can never match one, whatever built the `AuthConfig`.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use migration_shared::config::{is_blank_password, AuthConfig};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Whether a request with this `Authorization` header may pass.
pub fn check(auth: &AuthConfig, header: Option<&[u8]>) -> Result<(), ApiError> {
    let password = match auth {
        AuthConfig::Password(password) if is_blank_password(password) => {
            return Err(ApiError::AuthUnavailable(
                "the internal password is empty (an empty password is no password)".into(),
            ))
        }
        AuthConfig::Password(password) => password,
        AuthConfig::Unavailable(reason) => return Err(ApiError::AuthUnavailable(reason.clone())),
    };
    let header = header.ok_or_else(|| {
        ApiError::Unauthorized(
            "missing Authorization header (expected the base64 of the internal password)".into(),
        )
    })?;
    let text = std::str::from_utf8(header)
        .map(str::trim)
        .map_err(|_| ApiError::Unauthorized("Authorization header is not base64".into()))?;
    let given = STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .map_err(|_| ApiError::Unauthorized("Authorization header is not base64".into()))?;
    let without_newline = password.strip_suffix(b"\n").unwrap_or(password);
    let matches = given.as_slice().ct_eq(password.as_slice()).unwrap_u8()
        | given.as_slice().ct_eq(without_newline).unwrap_u8();
    if matches == 1 {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong internal password".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(password: &str) -> Vec<u8> {
        STANDARD.encode(password).into_bytes()
    }

    #[test]
    fn decisions() {
        let auth = AuthConfig::Password(b"secret\n".to_vec());
        assert!(check(&auth, Some(&header("secret"))).is_ok());
        assert!(check(&auth, Some(&header("secret\n"))).is_ok());
        assert!(matches!(
            check(&auth, Some(&header("wrong"))),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            check(&auth, Some(b"%%%")),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(check(&auth, None), Err(ApiError::Unauthorized(_))));
        for blank in [&b""[..], b"\n", b"\r\n"] {
            let auth = AuthConfig::Password(blank.to_vec());
            for header in [None, Some(&b""[..]), Some(b"Cg=="), Some(b"DQo=")] {
                assert!(matches!(
                    check(&auth, header),
                    Err(ApiError::AuthUnavailable(_))
                ));
            }
        }
        let none = AuthConfig::Unavailable("no password".into());
        assert!(matches!(
            check(&none, Some(&header("secret"))),
            Err(ApiError::AuthUnavailable(_))
        ));
    }
}
