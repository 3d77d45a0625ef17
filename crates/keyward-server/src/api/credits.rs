//! Credits in the API: the `credits` object of a key (create, edit, view)
//! and `POST /v1/keys/{id}/credits`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyward_core::Code;
use keyward_core::credits::{CreditOp, Credits, Refill, RefillInterval};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use super::keys::with_etag;
use super::views::KeyView;
use crate::app::AppState;
use crate::principal::Principal;

/// Uses a key may still make. Each valid verification spends its `cost`
/// (default 1); at 0 the key verifies `USAGE_EXCEEDED`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditsBody {
    #[schema(example = 1000)]
    pub remaining: i64,
    pub refill: Option<RefillBody>,
}

/// Sets the remaining credits back to `amount` at 00:00 UTC every day, or
/// every month on `refillDay` (1–31, default 1; the last day in shorter months).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefillBody {
    /// `daily` or `monthly`.
    #[schema(example = "monthly")]
    pub interval: String,
    #[schema(example = 1000)]
    pub amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refill_day: Option<u32>,
}

impl CreditsBody {
    pub fn into_credits(self) -> Result<Credits, ApiError> {
        let refill = self
            .refill
            .map(|r| {
                let interval = RefillInterval::parse(&r.interval).ok_or_else(|| {
                    ApiError::bad_request(Code::InvalidCredits, "credits.refill.interval must be: daily or monthly")
                })?;
                Ok::<_, ApiError>(Refill { interval, amount: r.amount, refill_day: r.refill_day })
            })
            .transpose()?;
        Ok(Credits::validate(self.remaining, refill)?)
    }

    pub fn of(c: &Credits) -> Self {
        CreditsBody {
            remaining: c.remaining,
            refill: c.refill.map(|r| RefillBody {
                interval: r.interval.as_str().to_owned(),
                amount: r.amount,
                refill_day: r.refill_day,
            }),
        }
    }
}

/// A change to a key's remaining credits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditChange {
    /// `set`, `increment` or `decrement` (never below 0).
    #[schema(example = "increment")]
    pub op: String,
    #[schema(example = 500)]
    pub value: i64,
}

#[utoipa::path(post, path = "/v1/keys/{id}/credits", tag = "keys", request_body = CreditChange,
    params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key with its credits as they now stand", body = KeyView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The key has no credits (give it some with PATCH)", body = ErrorBody),
    ))]
pub async fn change_credits(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CreditChange>,
) -> ApiResult<Response> {
    let op = CreditOp::parse(&body.op)
        .ok_or_else(|| ApiError::bad_request(Code::InvalidOp, "op must be: set, increment or decrement"))?;
    let key = state.keys.change_credits(&principal, &id, op, body.value).await?;
    Ok(with_etag(StatusCode::OK, &key, KeyView::from(&key)))
}
