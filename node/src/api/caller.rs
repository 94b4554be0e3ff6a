//! Who is calling the control API, for the trust audit log.
//!
//! On the Unix socket the kernel tells us (`SO_PEERCRED`): the caller is recorded as
//! `unix:<user> (uid N)`. On TCP the only identity is the bearer token, recorded as
//! `token`.

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use tokio::net::UnixListener;

/// The caller of a request, as the audit log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl Caller {
    /// The caller on TCP.
    pub fn token() -> Caller {
        Caller("token".into())
    }

    /// The caller on the Unix socket with this uid.
    pub fn unix(uid: u32) -> Caller {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        match user {
            Some(name) => Caller(format!("unix:{name} (uid {uid})")),
            None => Caller(format!("unix:uid {uid}")),
        }
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(cred) => Caller::unix(cred.uid()),
            Err(_) => Caller("unix:unknown".into()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ConnectInfo<Caller>>()
            .map(|c| c.0.clone())
            .unwrap_or_else(|| Caller("unknown".into())))
    }
}
