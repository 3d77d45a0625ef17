//! `/v1/pgp-keys`: OpenPGP keys for file encryption, and encrypting to or
//! decrypting with one of them, streamed both ways (the body is read as it
//! arrives and the answer written as it is made, so memory stays bounded
//! whatever the size; an answer the client does not read yet waits in a
//! temporary file).

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use keyward_core::Code;
use keyward_core::pgp::PgpKey;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::views::double_option;
use crate::app::AppState;
use crate::pgp::{PgpPatch, Upload};
use crate::principal::Principal;

/// Bytes per chunk of a streamed answer.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgpKeyView {
    #[schema(example = "pgp_3fH9xQ2mPz8TbL1c")]
    pub id: String,
    #[schema(example = "Partner SFTP drop")]
    pub name: String,
    pub description: Option<String>,
    /// Always `pgp` (GnuPG's keys are OpenPGP keys).
    #[serde(rename = "type")]
    #[schema(example = "pgp")]
    pub key_type: &'static str,
    /// The primary key's fingerprint, upper-case hex, as `gpg --fingerprint` shows it without spaces.
    #[schema(example = "CD05C64F91092F075443D347DADBE2F6E1DC9A84")]
    pub fingerprint: String,
    /// The 64-bit key id, upper-case hex.
    #[schema(example = "DADBE2F6E1DC9A84")]
    pub key_id: String,
    /// The primary key's algorithm and size or curve, then the encryption subkey's.
    #[schema(example = "EdDSA Ed25519 + ECDH Curve25519")]
    pub algorithm: String,
    #[schema(example = json!(["Partner <ops@partner.example>"]))]
    pub user_ids: Vec<String>,
    /// When the key was made (by its owner, not uploaded).
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Null: the key does not expire.
    #[serde(serialize_with = "super::views::time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The key has expired: it no longer encrypts.
    pub expired: bool,
    /// The key carries a revocation: it no longer encrypts.
    pub revoked: bool,
    /// Uploaded with its private part (kept sealed; never returned): it can decrypt.
    pub private: bool,
    /// The private part is protected by a passphrase (kept sealed too).
    pub has_passphrase: bool,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub uploaded_at: DateTime<Utc>,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl PgpKeyView {
    pub fn of(k: PgpKey, now: DateTime<Utc>) -> Self {
        let i = k.info;
        PgpKeyView {
            id: k.id,
            name: k.name,
            description: k.description,
            key_type: "pgp",
            fingerprint: i.fingerprint,
            key_id: i.key_id,
            algorithm: i.algorithm,
            user_ids: i.user_ids,
            created_at: i.created_at,
            expired: i.expires_at.is_some_and(|e| e <= now),
            expires_at: i.expires_at,
            revoked: i.revoked,
            private: i.private,
            has_passphrase: i.has_passphrase,
            uploaded_at: k.uploaded_at,
            updated_at: k.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PgpKeyList {
    /// By name.
    pub data: Vec<PgpKeyView>,
}

#[utoipa::path(get, path = "/v1/pgp-keys", tag = "pgp",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = PgpKeyList),
        (status = 401, body = ErrorBody), (status = 403, description = "Missing pgp:read", body = ErrorBody),
    ))]
pub async fn list_pgp_keys(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<PgpKeyList>> {
    let keys = state.pgp.list(&principal).await?;
    let now = state.audit.now();
    Ok(axum::Json(PgpKeyList { data: keys.into_iter().map(|k| PgpKeyView::of(k, now)).collect() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadPgpKeyRequest {
    /// 1–100 characters; unique in the workspace.
    #[schema(example = "Partner SFTP drop")]
    pub name: String,
    /// Up to 500 characters.
    pub description: Option<String>,
    /// `pgp` (`gpg` is accepted as the same).
    #[serde(rename = "type")]
    #[schema(example = "pgp")]
    pub key_type: String,
    /// One key, ASCII-armored (`gpg --armor --export`, or `--export-secret-keys`
    /// for a private key) or base64 of its binary form; at most 256 KiB.
    pub contents: String,
    /// Whether `contents` is a private key; it must match them.
    #[serde(default)]
    pub private: bool,
    /// Unlocks a protected private key (required for one, refused for a public key).
    pub passphrase: Option<String>,
}

#[utoipa::path(post, path = "/v1/pgp-keys", tag = "pgp", request_body = UploadPgpKeyRequest,
    description = "Uploads one OpenPGP key. A private key and its passphrase are stored sealed under the \
        master key and never returned.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, body = PgpKeyView),
        (status = 400, description = "invalid_contents, several_keys, private_mismatch, passphrase_required, \
            invalid_passphrase, no_encryption_key, invalid_name, invalid_type, master_key_required, \
            too_many_subkeys, passphrase_too_costly", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "Missing pgp:manage", body = ErrorBody),
        (status = 409, description = "The name is taken (duplicate_name)", body = ErrorBody),
        (status = 413, description = "The body is over the limit (payload_too_large)", body = ErrorBody),
    ))]
pub async fn upload_pgp_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<UploadPgpKeyRequest>,
) -> ApiResult<(StatusCode, axum::Json<PgpKeyView>)> {
    let upload = Upload {
        name: body.name,
        description: body.description,
        key_type: body.key_type,
        contents: body.contents,
        private: body.private,
        passphrase: body.passphrase,
    };
    let key = state.pgp.upload(&principal, upload).await?;
    Ok((StatusCode::CREATED, axum::Json(PgpKeyView::of(key, state.audit.now()))))
}

#[utoipa::path(get, path = "/v1/pgp-keys/{id}", tag = "pgp",
    params(("id" = String, Path, description = "PGP key id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = PgpKeyView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn get_pgp_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<PgpKeyView>> {
    let key = state.pgp.get(&principal, &id).await?;
    Ok(axum::Json(PgpKeyView::of(key, state.audit.now())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePgpKeyRequest {
    pub name: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

#[utoipa::path(patch, path = "/v1/pgp-keys/{id}", tag = "pgp", request_body = UpdatePgpKeyRequest,
    description = "Renames a key or changes its description; the key itself cannot change (upload another).",
    params(("id" = String, Path, description = "PGP key id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = PgpKeyView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The name is taken", body = ErrorBody),
    ))]
pub async fn update_pgp_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdatePgpKeyRequest>,
) -> ApiResult<axum::Json<PgpKeyView>> {
    let key = state.pgp.update(&principal, &id, PgpPatch { name: body.name, description: body.description }).await?;
    Ok(axum::Json(PgpKeyView::of(key, state.audit.now())))
}

#[utoipa::path(delete, path = "/v1/pgp-keys/{id}", tag = "pgp",
    params(("id" = String, Path, description = "PGP key id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Deleted, its sealed private part with it"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn delete_pgp_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.pgp.delete(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/pgp-keys/{id}/public", tag = "pgp",
    description = "The public key, ASCII-armored (for a private upload, its public part): `gpg --import` reads it.",
    params(("id" = String, Path, description = "PGP key id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, content_type = "application/pgp-keys", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn public_pgp_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let key = state.pgp.public_key(&principal, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/pgp-keys")], key.public_key).into_response())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EncryptQuery {
    /// `true`: an ASCII-armored message (`-----BEGIN PGP MESSAGE-----`); binary otherwise.
    pub armor: Option<bool>,
}

#[utoipa::path(post, path = "/v1/pgp-keys/{id}/encrypt", tag = "pgp",
    description = "Encrypts the request body (the raw file, any size) to the key and streams back one \
        OpenPGP message (SEIPD, AES-256) that `gpg --decrypt` reads. Needs pgp:use.",
    params(("id" = String, Path, description = "PGP key id"), EncryptQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The OpenPGP message, binary or (`?armor=true`) ASCII-armored",
            content((Vec<u8> = "application/octet-stream"), (String = "application/pgp-encrypted"))),
        (status = 400, description = "The key has expired (key_expired) or was revoked (key_revoked)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn encrypt(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EncryptQuery>,
    body: Body,
) -> ApiResult<Response> {
    let key = state.pgp.for_encryption(&principal, &id).await?;
    let armor = q.armor.unwrap_or(false);
    let (mut out, answer) = ChunkWriter::new();
    let input = BodyReader::new(body);
    tokio::task::spawn_blocking(move || {
        let done = keyward_core::pgp::encrypt(&key, input, &mut out, armor).and_then(|()| out.finish());
        if let Err(e) = done {
            out.fail(e);
        }
    });
    let content_type = if armor { "application/pgp-encrypted" } else { "application/octet-stream" };
    Ok(([(header::CONTENT_TYPE, content_type)], answer).into_response())
}

#[utoipa::path(post, path = "/v1/pgp-keys/{id}/decrypt", tag = "pgp",
    description = "Decrypts the request body (an OpenPGP message to the key, binary or armored, any size) with \
        the key's stored private part and streams back the plaintext. Needs pgp:use. A message damaged past \
        its start ends the answer early: the connection is closed without the final chunk.",
    params(("id" = String, Path, description = "PGP key id")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "The key has no private part (no_private_key); the body is not an OpenPGP \
            message (not_openpgp), not encrypted (not_encrypted) or not to this key (wrong_key)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn decrypt(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    body: Body,
) -> ApiResult<Response> {
    let key = state.pgp.for_decryption(&principal, &id).await?;
    // Opening the message unlocks the key (its S2K): in turn, off the
    // async workers.
    let turn = state.pgp.unlock_turn().await?;
    let (mut out, answer) = ChunkWriter::new();
    let input = BufReader::with_capacity(CHUNK, BodyReader::new(body));
    let (opened, ready) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let opening = keyward_core::pgp::decrypt(&key.key, key.passphrase.as_deref(), input);
        drop(turn);
        let mut plain = match opening {
            Ok(plain) => plain,
            Err(e) => {
                let _ = opened.send(Err(e));
                return;
            }
        };
        let _ = opened.send(Ok(()));
        let done = std::io::copy(&mut plain, &mut out).and_then(|_| out.finish());
        if let Err(e) = done {
            out.fail(e);
        }
    });
    match ready.await {
        Ok(Ok(())) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::InternalError, "Decryption failed")),
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The request body as a blocking reader (for a blocking thread), frame by
/// frame as it arrives.
struct BodyReader(tokio_util::io::SyncIoBridge<tokio_util::io::StreamReader<ByteStream, Bytes>>);

impl BodyReader {
    fn new(body: Body) -> Self {
        let stream: ByteStream = Box::pin(body.into_data_stream().map(|r| r.map_err(std::io::Error::other)));
        BodyReader(tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream)))
    }
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyReader")
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// A blocking writer whose chunks become the response body through a
/// [`Spool`]: it never waits on the client, and fails once the client has
/// gone.
struct ChunkWriter {
    buf: Vec<u8>,
    spool: Arc<Spool>,
}

impl ChunkWriter {
    fn new() -> (Self, Body) {
        let spool = Arc::new(Spool::default());
        let body = Body::from_stream(SpoolReader(spool.clone()));
        (ChunkWriter { buf: Vec::with_capacity(CHUNK), spool }, body)
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.spool.push(chunk)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.send()?;
        self.spool.end(Ok(()));
        Ok(())
    }

    /// Ends the body with an error: the client sees the answer cut short.
    fn fail(&mut self, e: std::io::Error) {
        tracing::warn!(error = %e, "a streamed PGP answer stopped early");
        self.spool.end(Err(e));
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The answer between the thread that makes it and the client: up to
/// [`IN_MEMORY`] bytes in memory, the rest in an unlinked temporary file
/// (gone with the request), read back in order. The writer never waits:
/// waiting for room, even briefly, cost a client that reads in bursts
/// (reqwest) six tenths of its speed. So the request body is read
/// on whether or not the client reads the answer yet: clients that send
/// the whole body before reading (Python's requests, urllib, http.client)
/// would otherwise wait on the server while it waits on them.
#[derive(Default)]
struct Spool(Mutex<SpoolState>);

/// Bytes of the answer kept in memory before the rest goes to disk.
const IN_MEMORY: usize = 2 << 20;

#[derive(Default)]
struct SpoolState {
    memory: VecDeque<Bytes>,
    in_memory: usize,
    file: Option<std::fs::File>,
    /// Bytes of the file written, and sent: while `sent < written`, every
    /// new chunk goes behind them, to the file.
    written: u64,
    sent: u64,
    end: Option<std::io::Result<()>>,
    ended: bool,
    /// The client went away.
    closed: bool,
    waker: Option<Waker>,
}

impl Spool {
    fn lock(&self) -> std::sync::MutexGuard<'_, SpoolState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, chunk: Bytes) -> std::io::Result<()> {
        let mut st = self.lock();
        if st.closed {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        if st.sent < st.written || st.in_memory + chunk.len() > IN_MEMORY {
            if st.file.is_none() {
                st.file = Some(tempfile::tempfile()?);
            }
            let at = st.written;
            st.file.as_ref().expect("made above").write_all_at(&chunk, at)?;
            st.written += chunk.len() as u64;
        } else {
            st.in_memory += chunk.len();
            st.memory.push_back(chunk);
        }
        if let Some(waker) = st.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    fn end(&self, outcome: std::io::Result<()>) {
        let mut st = self.lock();
        st.end = Some(outcome);
        if let Some(waker) = st.waker.take() {
            waker.wake();
        }
    }
}

/// The response body's side of a [`Spool`]; dropping it (the client went
/// away) stops the writer.
struct SpoolReader(Arc<Spool>);

impl Stream for SpoolReader {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.0.lock();
        if let Some(chunk) = st.memory.pop_front() {
            st.in_memory -= chunk.len();
            return Poll::Ready(Some(Ok(chunk)));
        }
        if st.sent < st.written {
            // From the page cache as a rule: a short read, done in place.
            let len = (st.written - st.sent).min(CHUNK as u64) as usize;
            let mut buf = vec![0; len];
            let read = st.file.as_ref().expect("written to").read_exact_at(&mut buf, st.sent);
            if let Err(e) = read {
                st.closed = true;
                return Poll::Ready(Some(Err(e)));
            }
            st.sent += len as u64;
            if st.sent == st.written {
                // All sent: the file is written from its start again.
                (st.sent, st.written) = (0, 0);
            }
            return Poll::Ready(Some(Ok(Bytes::from(buf))));
        }
        if st.ended {
            return Poll::Ready(None);
        }
        match st.end.take() {
            Some(outcome) => {
                st.ended = true;
                Poll::Ready(outcome.err().map(Err))
            }
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        self.0.lock().closed = true;
    }
}
