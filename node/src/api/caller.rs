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

/// The caller of a request. Taken from the connection without any lookup; the user
/// name is looked up (an NSS call, which may block) only when the audit log needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A Unix-socket client with this uid (`None`: the kernel did not say).
    Unix(Option<u32>),
    /// A TCP client that presented the bearer token.
    Token,
    /// Not known (a router served without connection info).
    Unknown,
}

impl Caller {
    /// How the audit log names the caller: `unix:<user> (uid N)`, `token`, `unknown`.
    /// Runs the user lookup on the blocking pool.
    pub async fn audit_name(self) -> String {
        match self {
            Caller::Unix(Some(uid)) => tokio::task::spawn_blocking(move || unix_name(uid))
                .await
                .unwrap_or_else(|_| format!("unix:uid {uid}")),
            Caller::Unix(None) => "unix:unknown".into(),
            Caller::Token => "token".into(),
            Caller::Unknown => "unknown".into(),
        }
    }
}

fn unix_name(uid: u32) -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    match user {
        Some(name) => format!("unix:{name} (uid {uid})"),
        None => format!("unix:uid {uid}"),
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Caller::Unix(stream.io().peer_cred().ok().map(|c| c.uid()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ConnectInfo<Caller>>()
            .map(|c| c.0)
            .unwrap_or(Caller::Unknown))
    }
}
